//! Mock IdP servers for the connector and sign-in tests: axum apps on port 0 that
//! answer like the real APIs (token endpoint, paging, throttling, expiring tokens,
//! server errors), with knobs to make them misbehave and counters to check on.

pub mod auth0;
pub mod faults;
pub mod google;
pub mod graph;
pub mod jwt;
pub mod keycloak;
pub mod kit;
pub mod okta;
pub mod onelogin;

pub use crate::common::teams_of;
pub use kit::{Faults, Flavor};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Serves `router` on 127.0.0.1:0 in the background; returns its base URL.
pub async fn serve(router: axum::Router) -> (SocketAddr, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("mock address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, format!("http://{addr}"))
}

use serde_json::Value;
use std::collections::BTreeMap;

/// The people every mock directory starts with: (key, given name, family name, active).
/// Dave's account is disabled (deprovisioned, suspended, blocked: each IdP's word).
pub const PEOPLE: [(&str, &str, &str, bool); 5] = [
    ("alice", "Alice", "Ng", true),
    ("bob", "Bob", "Stone", true),
    ("carol", "Carol", "Diaz", true),
    ("dave", "Dave", "Kim", false),
    ("eve", "Eve", "Moss", true),
];

/// The groups every mock directory starts with, and their members (keys of [`PEOPLE`]).
pub const GROUPS: [(&str, &str, &[&str]); 4] = [
    ("users", "LLM Users", &["alice", "bob", "carol", "dave"]),
    ("admins", "LLM Admins", &["alice"]),
    ("sales", "Sales", &["bob", "eve"]),
    ("finance", "Finance", &[]),
];

/// A mock IdP's groups and users, in the IdP's own JSON for users.
#[derive(Default)]
pub struct Dir {
    /// id → the IdP's JSON for the user
    pub users: BTreeMap<String, Value>,
    /// In the order the IdP lists them.
    pub groups: Vec<Group>,
}

#[derive(Clone)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// Direct members' ids.
    pub members: Vec<String>,
    /// The group this one is nested in (Keycloak subgroups).
    pub parent: Option<String>,
}

impl Dir {
    /// Builds the standard directory: `user_id(key)` and `group_id(key)` name the ids,
    /// `user_json(id, key, given, family, active)` renders a user as the IdP would.
    pub fn standard(
        user_id: impl Fn(&str) -> String,
        group_id: impl Fn(&str) -> String,
        user_json: impl Fn(&str, &str, &str, &str, bool) -> Value,
    ) -> Self {
        let mut dir = Dir::default();
        for (key, given, family, active) in PEOPLE {
            let id = user_id(key);
            dir.users
                .insert(id.clone(), user_json(&id, key, given, family, active));
        }
        for (key, name, members) in GROUPS {
            dir.groups.push(Group {
                id: group_id(key),
                name: name.to_owned(),
                members: members.iter().map(|m| user_id(m)).collect(),
                parent: None,
            });
        }
        dir
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub fn add_member(&mut self, group: &str, user: &str) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.id == group) {
            g.members.push(user.to_owned());
        }
    }

    pub fn remove_member(&mut self, group: &str, user: &str) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.id == group) {
            g.members.retain(|m| m != user);
        }
    }

    /// The groups `user` is directly in.
    pub fn groups_of(&self, user: &str) -> Vec<Group> {
        self.groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
            .cloned()
            .collect()
    }

    /// The JSON of a group's direct members, in order.
    pub fn members_json(&self, group: &Group) -> Vec<Value> {
        group
            .members
            .iter()
            .filter_map(|m| self.users.get(m).cloned())
            .collect()
    }
}

/// A file holding `text`, in a directory that lives as long as the returned guard.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("temp file written");
    (dir, path)
}

/// The snapshot as the JSON `scimsync pull` writes.
pub fn snapshot_json(snapshot: &scimsync::reconcile::snapshot::Snapshot) -> Value {
    serde_json::to_value(snapshot).expect("a snapshot serialises")
}
