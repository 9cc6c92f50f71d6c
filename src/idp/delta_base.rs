//! The delta base as the store keeps it (`sync_state.delta_base`), so that a restarted
//! daemon, or another replica, continues with a delta run instead of a full pull.
//!
//! The layout is one format byte, then deflated JSON of:
//! - the scope: a digest of what decides which groups and users the base describes
//!   (kind, tenant, API base URL, `groups` filter); a base for another scope is ignored;
//! - the cursor the base belongs to, which must equal `sync_state.delta_cursor`;
//! - the users, sorted by id, each as an array of the fields the planner reads;
//! - the groups, each with its members as gaps between positions in that user list.
//!
//! Member ids are the bulk of a tenant (a million memberships of 36-character GUIDs is
//! 38 MB as text); as gaps between sorted positions they are a few bytes each, and
//! compress well. 100,000 users in 1,000 groups with a million memberships come to
//! about 5 MB (see `a_large_tenant_fits_in_a_few_megabytes`).
//!
//! Anything that does not decode (another format, damage, another scope) is reported
//! as a reason and the caller pulls in full: a base is never misread.

use super::{DeltaBase, IdpUser};
use crate::config::IdpConfig;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// Bumped whenever the layout changes: a base of any other format is ignored.
const FORMAT: u8 = 1;

/// Above this a stored base is not inflated: no real tenant comes near it, and a
/// damaged or hostile row must not make the daemon allocate without bound.
const MAX_INFLATED_BYTES: u64 = 2 << 30;

#[derive(Serialize, Deserialize)]
struct Stored {
    scope: String,
    cursor: String,
    users: Vec<StoredUser>,
    groups: Vec<StoredGroup>,
}

/// Serialised as an array, not an object: field names would repeat 100,000 times.
#[derive(Serialize, Deserialize)]
struct StoredUser(
    String,         // id
    String,         // user_name
    Option<String>, // email
    Option<String>, // display_name
    Option<String>, // given_name
    Option<String>, // family_name
    bool,           // active
);

/// (id, name, gaps): the members are at positions `gaps[0]`, `gaps[0] + gaps[1]`, ...
/// of the user list.
#[derive(Serialize, Deserialize)]
struct StoredGroup(String, String, Vec<u32>);

/// Why a stored base was not used (for the log); the run then pulls in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("written in format {0}, this version reads format {FORMAT}")]
    Format(u8),
    #[error("written for another tenant, API URL or groups filter")]
    Scope,
    #[error("damaged: {0}")]
    Damaged(String),
}

/// A digest of the settings that decide what a base describes. Secrets, schedules and
/// retry settings are left out: changing them does not change the directory read.
pub fn scope_of(config: &IdpConfig) -> String {
    let described = serde_json::json!({
        "kind": format!("{:?}", config.kind),
        "tenant": config.tenant_id,
        "api": config.api_base_url,
        "groups": config.groups,
    });
    hex::encode(Sha256::digest(described.to_string().as_bytes()))
}

/// A digest of an encoded base, to tell whether the one in memory is the one stored.
pub fn digest(encoded: &[u8]) -> [u8; 32] {
    Sha256::digest(encoded).into()
}

pub fn encode(base: &DeltaBase, scope: &str) -> Result<Vec<u8>, String> {
    let position: FxHashMap<&str, u32> = base
        .users
        .keys()
        .enumerate()
        .map(|(i, id)| Ok((id.as_str(), u32::try_from(i).map_err(|e| e.to_string())?)))
        .collect::<Result<_, String>>()?;
    let mut groups = Vec::with_capacity(base.groups.len());
    for (id, (name, members)) in &base.groups {
        let mut positions = members
            .iter()
            .map(|m| {
                position
                    .get(m.as_str())
                    .copied()
                    .ok_or_else(|| format!("member {m:?} of group {id:?} is not among the users"))
            })
            .collect::<Result<Vec<u32>, String>>()?;
        positions.sort_unstable();
        let mut previous = 0;
        for p in &mut positions {
            let gap = *p - previous;
            previous = *p;
            *p = gap;
        }
        groups.push(StoredGroup(id.clone(), name.clone(), positions));
    }
    let users = base
        .users
        .values()
        .map(|u| {
            StoredUser(
                u.id.clone(),
                u.user_name.clone(),
                u.email.clone(),
                u.display_name.clone(),
                u.given_name.clone(),
                u.family_name.clone(),
                u.active,
            )
        })
        .collect();
    let stored = Stored {
        scope: scope.to_owned(),
        cursor: base.cursor.clone(),
        users,
        groups,
    };
    let mut out = vec![FORMAT];
    let mut encoder = DeflateEncoder::new(&mut out, Compression::default());
    serde_json::to_writer(&mut encoder, &stored).map_err(|e| e.to_string())?;
    encoder.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

pub fn decode(encoded: &[u8], scope: &str) -> Result<DeltaBase, Unusable> {
    let Some((&format, deflated)) = encoded.split_first() else {
        return Err(Unusable::Damaged("empty".into()));
    };
    if format != FORMAT {
        return Err(Unusable::Format(format));
    }
    let mut json = Vec::new();
    DeflateDecoder::new(deflated)
        .take(MAX_INFLATED_BYTES)
        .read_to_end(&mut json)
        .map_err(|e| Unusable::Damaged(e.to_string()))?;
    let stored: Stored =
        serde_json::from_slice(&json).map_err(|e| Unusable::Damaged(e.to_string()))?;
    drop(json);
    if stored.scope != scope {
        return Err(Unusable::Scope);
    }
    let ids: Vec<&str> = stored.users.iter().map(|u| u.0.as_str()).collect();
    let mut groups = BTreeMap::new();
    for StoredGroup(id, name, gaps) in &stored.groups {
        let mut members = BTreeSet::new();
        let mut position: u64 = 0;
        for gap in gaps {
            position += u64::from(*gap);
            let member = usize::try_from(position)
                .ok()
                .and_then(|p| ids.get(p))
                .ok_or_else(|| {
                    Unusable::Damaged(format!("group {id:?} names a user beyond the list"))
                })?;
            members.insert((*member).to_owned());
        }
        groups.insert(id.clone(), (name.clone(), members));
    }
    drop(ids);
    let users = stored
        .users
        .into_iter()
        .map(
            |StoredUser(id, user_name, email, display_name, given_name, family_name, active)| {
                let user = IdpUser {
                    id: id.clone(),
                    user_name,
                    email,
                    display_name,
                    given_name,
                    family_name,
                    active,
                };
                (id, user)
            },
        )
        .collect();
    Ok(DeltaBase {
        cursor: stored.cursor,
        groups,
        users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdpKind;

    fn user(id: &str, n: usize) -> IdpUser {
        IdpUser {
            id: id.to_owned(),
            user_name: format!("user{n}@contoso.com"),
            email: Some(format!("user{n}@contoso.com")),
            display_name: Some(format!("User Number{n}")),
            given_name: Some("User".into()),
            family_name: Some(format!("Number{n}")),
            active: n % 17 != 0,
        }
    }

    fn small() -> DeltaBase {
        let users: BTreeMap<String, IdpUser> = ["u-a", "u-b", "u-c"]
            .iter()
            .enumerate()
            .map(|(n, id)| (id.to_string(), user(id, n)))
            .collect();
        let groups = BTreeMap::from([
            (
                "g-1".to_owned(),
                (
                    "LLM Users".to_owned(),
                    BTreeSet::from(["u-a".into(), "u-c".into()]),
                ),
            ),
            ("g-2".to_owned(), ("LLM Empty".to_owned(), BTreeSet::new())),
        ]);
        DeltaBase {
            cursor: "{\"groups\":\"g\",\"users\":\"u\"}".into(),
            groups,
            users,
        }
    }

    fn same(a: &DeltaBase, b: &DeltaBase) {
        assert_eq!(a.cursor, b.cursor);
        assert_eq!(a.groups, b.groups);
        assert_eq!(a.users, b.users);
    }

    #[test]
    fn a_base_reads_back_as_written() {
        let base = small();
        let encoded = encode(&base, "scope").unwrap();
        same(&decode(&encoded, "scope").unwrap(), &base);
    }

    #[test]
    fn another_scope_another_format_or_damage_is_unusable_not_misread() {
        let encoded = encode(&small(), "scope").unwrap();
        assert_eq!(decode(&encoded, "other").unwrap_err(), Unusable::Scope);
        let mut other_format = encoded.clone();
        other_format[0] = FORMAT + 1;
        assert_eq!(
            decode(&other_format, "scope").unwrap_err(),
            Unusable::Format(FORMAT + 1)
        );
        assert!(matches!(decode(&[], "scope"), Err(Unusable::Damaged(_))));
        let truncated = &encoded[..encoded.len() / 2];
        assert!(matches!(
            decode(truncated, "scope"),
            Err(Unusable::Damaged(_))
        ));
    }

    #[test]
    fn a_member_missing_from_the_users_is_not_encoded() {
        let mut base = small();
        base.groups
            .get_mut("g-2")
            .unwrap()
            .1
            .insert("u-nobody".into());
        assert!(encode(&base, "scope").is_err());
    }

    #[test]
    fn the_scope_follows_tenant_api_and_groups_filter_but_not_secrets() {
        let mut config = IdpConfig::new("entra", IdpKind::Entra);
        config.tenant_id = Some("t-1".into());
        config.groups = vec!["LLM *".into()];
        let scope = scope_of(&config);
        let mut changed = config.clone();
        changed.client_secret = Some("another".into());
        changed.schedule = Some("0 * * * * *".into());
        assert_eq!(scope_of(&changed), scope);
        for change in [
            |c: &mut IdpConfig| c.tenant_id = Some("t-2".into()),
            |c: &mut IdpConfig| c.groups.push("Sales".into()),
            |c: &mut IdpConfig| c.api_base_url = Some("https://graph.example/v1.0".into()),
        ] {
            let mut changed = config.clone();
            change(&mut changed);
            assert_ne!(scope_of(&changed), scope);
        }
    }

    /// The size the brief bounds: 100,000 users, 1,000 groups, a million memberships.
    /// Measured: 5.1 MB (deflate of 16.7 MB of JSON), against ~50 MB as JSON with
    /// member ids spelled out. Ids are random GUIDs, the worst case for compression.
    #[test]
    fn a_large_tenant_fits_in_a_few_megabytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        let guid = |rng: &mut rand::rngs::StdRng| {
            uuid::Builder::from_random_bytes(rng.gen())
                .into_uuid()
                .to_string()
        };
        let ids: Vec<String> = (0..100_000).map(|_| guid(&mut rng)).collect();
        let users: BTreeMap<String, IdpUser> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| (id.clone(), user(id, n)))
            .collect();
        let groups: BTreeMap<String, (String, BTreeSet<String>)> = (0..1_000)
            .map(|g| {
                let members = (0..1_000)
                    .map(|_| ids[rng.gen_range(0..ids.len())].clone())
                    .collect();
                (guid(&mut rng), (format!("LLM Group {g}"), members))
            })
            .collect();
        let memberships: usize = groups.values().map(|g| g.1.len()).sum();
        assert!(memberships > 990_000, "{memberships}");
        let base = DeltaBase {
            cursor: "{\"groups\":\"https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=x\"}"
                .into(),
            groups,
            users,
        };
        let encoded = encode(&base, "scope").unwrap();
        let mut json = Vec::new();
        DeflateDecoder::new(&encoded[1..])
            .read_to_end(&mut json)
            .unwrap();
        eprintln!(
            "encoded base: {} bytes ({} bytes of JSON) for {memberships} memberships",
            encoded.len(),
            json.len()
        );
        assert!(encoded.len() < 12_000_000, "{} bytes", encoded.len());
        same(&decode(&encoded, "scope").unwrap(), &base);
    }
}
