//! The fuzz entry points, one per target, shared by the libFuzzer binaries in
//! fuzz_targets/ and by tests/it/fuzz_regressions.rs (which includes this file with
//! `#[path]`), so the committed corpus replays through exactly the code that was fuzzed.
//!
//! Each entry takes raw bytes, feeds them to the parser the server uses for network
//! or file input, and checks the invariants that must hold whatever the input:
//! no panic (libFuzzer reports it), parse → render → parse gives the same value,
//! and a refused PATCH leaves the resource untouched.

use scimsync::config::Config;
use scimsync::domain::{Role, Source, Team, TeamName, User, UserName};
use scimsync::reconcile::snapshot::Snapshot;
use scimsync::reconcile::{plan, Actual, Policy};
use scimsync::scim::filter::{parse_filter, parse_patch_path, MAX_FILTER_LEN};
use scimsync::scim::list::ListParams;
use scimsync::scim::patch::{apply_operations, member_changes, parse_patch_request};
use scimsync::scim::resources::{
    member_ids, parse_group, parse_user, render_group, render_user, strip_nulls,
};
use serde_json::{json, Value};

/// A fuzz entry point: raw bytes in, a panic on a broken invariant.
pub type Entry = fn(&[u8]);

/// The targets, by name, for replaying a corpus directory.
pub const TARGETS: &[(&str, Entry)] = &[
    ("scim_filter", scim_filter),
    ("patch_path", patch_path),
    ("patch_apply", patch_apply),
    ("scim_user_body", scim_user_body),
    ("snapshot", snapshot),
];

const BASE: &str = "https://scim.example.com/scim/v2";

/// Refusals for size or depth are the only ones a re-rendered filter may hit.
fn is_limit_error(message: &str) -> bool {
    message.contains("at most") || message.contains("deeper than")
}

/// `?filter=`: the grammar of RFC 7644 §3.4.2.2. An accepted filter renders to
/// canonical text that parses back to the same AST, and evaluates without panicking.
pub fn scim_filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(filter) = parse_filter(text) else {
        return;
    };
    assert!(
        text.len() <= MAX_FILTER_LEN,
        "accepted a filter of {} bytes",
        text.len()
    );
    let rendered = filter.to_string();
    match parse_filter(&rendered) {
        Ok(again) => assert_eq!(again, filter, "render/parse round trip of {text:?}"),
        Err(e) => assert!(
            is_limit_error(&e.message),
            "{text:?} parsed but its rendering {rendered:?} did not: {e}"
        ),
    }
    for element in [
        sample_user_json(),
        json!({"value": "a", "type": "work", "primary": true}),
        json!("plain"),
        json!(42),
    ] {
        let _ = filter.matches(&element);
    }
}

/// A PATCH operation's `path` (RFC 7644 §3.5.2).
pub fn patch_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = parse_patch_path(text) else {
        return;
    };
    let rendered = path.to_string();
    match parse_patch_path(&rendered) {
        Ok(again) => assert_eq!(again, path, "render/parse round trip of {text:?}"),
        Err(e) => assert!(
            is_limit_error(&e.message),
            "{text:?} parsed but its rendering {rendered:?} did not: {e}"
        ),
    }
}

fn sample_user() -> User {
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000000Z")
        .expect("timestamp")
        .with_timezone(&chrono::Utc);
    let mut attributes = serde_json::Map::new();
    attributes.insert(
        "emails".into(),
        json!([
            {"value": "alice@example.com", "type": "work", "primary": true},
            {"value": "alice@home.example", "type": "home"}
        ]),
    );
    attributes.insert(
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".into(),
        json!({"department": "R&D", "manager": {"value": "m-1"}}),
    );
    User {
        id: uuid::Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888),
        user_name: UserName::parse("alice@example.com").expect("user name"),
        external_id: Some("ext-1".into()),
        email: Some("alice@example.com".into()),
        display_name: Some("Alice".into()),
        given_name: Some("Alice".into()),
        family_name: Some("Ng".into()),
        role: Role::viewer(),
        active: true,
        attributes,
        source: Source::Scim("default".into()),
        created: at,
        modified: at,
        version: 3,
    }
}

fn sample_user_json() -> Value {
    render_user(&sample_user(), Some(&[]), BASE)
}

fn sample_team_json() -> Value {
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000000Z")
        .expect("timestamp")
        .with_timezone(&chrono::Utc);
    let team = Team {
        id: uuid::Uuid::from_u128(0x9999_2222_3333_4444_5555_6666_7777_8888),
        display_name: TeamName::parse("LLM Admins").expect("team name"),
        external_id: Some("g-1".into()),
        metadata: Default::default(),
        source: Source::Scim("default".into()),
        created: at,
        modified: at,
        version: 7,
    };
    render_group(&team, None, BASE)
}

/// A PATCH body: parsed, applied to a user and (membership split off, as the
/// /Groups handler does) to a group, and the result read back as the handler would.
/// A refused PATCH must leave the resource exactly as it was.
pub fn patch_apply(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(operations) = parse_patch_request(&body) else {
        return;
    };

    let original = sample_user_json();
    let mut user = original.clone();
    match apply_operations(&mut user, &operations, &["id", "meta", "groups"]) {
        Ok(()) => {
            assert_eq!(user["id"], original["id"], "a PATCH changed the user's id");
            let _ = parse_user(&user);
        }
        Err(e) => {
            let _ = e.scim_type();
            assert_eq!(user, original, "a refused PATCH changed the user: {e}");
        }
    }

    let mut rest = Vec::new();
    for operation in &operations {
        match member_changes(operation) {
            Ok(split) => rest.extend(split.rest),
            Err(_) => return,
        }
    }
    let original = sample_team_json();
    let mut group = original.clone();
    match apply_operations(&mut group, &rest, &["id", "meta"]) {
        Ok(()) => {
            assert_eq!(
                group["id"], original["id"],
                "a PATCH changed the group's id"
            );
            let _ = parse_group(&group);
        }
        Err(e) => assert_eq!(group, original, "a refused PATCH changed the group: {e}"),
    }
}

/// A POST/PUT body for /Users or /Groups, or a POST /.search SearchRequest.
pub fn scim_user_body(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(input) = parse_user(&body) {
        assert!(
            !input.user_name.as_str().trim().is_empty(),
            "accepted an empty userName"
        );
    }
    if let Ok(input) = parse_group(&body) {
        if let Some(members) = &input.members {
            assert!(members.iter().all(|m| !m.trim().is_empty()));
        }
    }
    if let Value::Object(fields) = &body {
        if let Some(members) = fields.get("members") {
            let _ = member_ids(members);
        }
    }
    let _ = strip_nulls(body.clone());
    let _ = ListParams::from_search(&body);
}

/// A snapshot file (`plan --snapshot`): parsed, round-tripped through its own JSON,
/// and planned against an empty store.
pub fn snapshot(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = Snapshot::parse(text) else {
        return;
    };
    let json = serde_json::to_string(&parsed).expect("a parsed snapshot serialises");
    let again = Snapshot::parse(&json).expect("a serialised snapshot parses");
    assert_eq!(again, parsed, "snapshot round trip");
    let desired = parsed.into_desired();
    let actual = Actual {
        everything: true,
        ..Actual::default()
    };
    let policy = Policy::from_config(&Config::default(), scimsync::store::now());
    let _ = plan(&desired, &actual, &policy);
}
