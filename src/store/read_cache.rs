//! Results of the hot read queries, kept for as long as the database has not changed.
//!
//! Every entry belongs to one [`Watermark`]: it is served only to a request that read
//! that same watermark before looking, i.e. only while no connection anywhere (this
//! process, the CLI, an operator's `token revoke`) has committed since the entry was
//! read from the database. The first request that sees a new watermark empties the
//! cache. So a revoked token is refused on the very next request, and a read never
//! returns anything older than what the database held when the request began.
//!
//! Only SQLite has a watermark (see [`super::watermark`]); on PostgreSQL, or for an
//! in-memory database, the cache is off and every read goes to the database.
//!
//! The sizes are bounded; a full map takes no more entries until the next change, which
//! keeps the memory of a store of any size to a few tens of megabytes.

use super::lists::{GroupRef, Listed};
use super::tokens::TokenPrincipal;
use super::watermark::{Sentinel, WalIndex, Watermark};
use crate::domain::User;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

// A cached user costs about 2.5 KB (its SCIM attributes are a JSON tree): 10,000 of
// them keep the cache near 25 MB, inside the 100 MB the daemon is allowed in all.
const MAX_TOKENS: usize = 1_024;
const MAX_USERS: usize = 10_000;
const MAX_LISTS: usize = 10_000;
const MAX_COUNTS: usize = 1_024;

/// What a request read before it looked in the cache: the right to use entries of that
/// watermark, and to add entries under it.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(Option<Watermark>);

#[derive(Default)]
pub struct Entries {
    pub tokens: HashMap<String, TokenPrincipal>,
    pub users: HashMap<Uuid, User>,
    pub groups: HashMap<Uuid, Vec<GroupRef>>,
    /// A list query (its canonical text) → the ids of the page, in order, and the total.
    pub lists: HashMap<String, Listed<Uuid>>,
    /// A filter's count query (its SQL and parameters) → how many rows match.
    pub counts: HashMap<String, u64>,
}

impl Entries {
    /// The users of a cached page, or `None` if any of them is not cached.
    pub fn users_of(&self, ids: &[Uuid]) -> Option<Vec<User>> {
        ids.iter().map(|id| self.users.get(id).cloned()).collect()
    }

    pub fn put_token(&mut self, hash: &str, principal: &TokenPrincipal) {
        if self.tokens.len() < MAX_TOKENS {
            self.tokens.insert(hash.to_owned(), principal.clone());
        }
    }

    pub fn put_user(&mut self, user: &User) {
        if self.users.len() < MAX_USERS {
            self.users.insert(user.id, user.clone());
        }
    }

    pub fn put_groups(&mut self, user: Uuid, groups: &[GroupRef]) {
        if self.groups.len() < MAX_USERS {
            self.groups.insert(user, groups.to_vec());
        }
    }

    pub fn put_list(&mut self, key: String, page: &Listed<User>) {
        if self.lists.len() >= MAX_LISTS {
            return;
        }
        page.items.iter().for_each(|user| self.put_user(user));
        self.lists.insert(
            key,
            Listed {
                total: page.total,
                items: page.items.iter().map(|u| u.id).collect(),
            },
        );
    }

    pub fn put_count(&mut self, key: String, total: u64) {
        if self.counts.len() < MAX_COUNTS {
            self.counts.insert(key, total);
        }
    }
}

struct Current {
    at: Option<Watermark>,
    entries: Entries,
}

pub struct ReadCache {
    index: Option<(WalIndex, Sentinel)>,
    current: Mutex<Current>,
}

impl ReadCache {
    /// A cache that never holds anything.
    pub fn off() -> Self {
        ReadCache {
            index: None,
            current: Mutex::new(Current {
                at: None,
                entries: Entries::default(),
            }),
        }
    }

    pub fn on(index: WalIndex, sentinel: Sentinel) -> Self {
        ReadCache {
            index: Some((index, sentinel)),
            ..Self::off()
        }
    }

    /// The read-through every cached query shares: the answer from the cache when it
    /// holds one, else `read`'s, kept for the requests that follow. `read` is a future
    /// not yet polled, so the watermark is read before its query starts.
    pub async fn through<T, E>(
        &self,
        look: impl FnOnce(&Entries) -> Option<T>,
        read: impl std::future::Future<Output = Result<T, E>>,
        keep: impl FnOnce(&mut Entries, &T),
    ) -> Result<T, E> {
        let ticket = self.ticket();
        if let Some(hit) = self.lookup(ticket, look) {
            return Ok(hit);
        }
        let value = read.await?;
        self.keep(ticket, |entries| keep(entries, &value));
        Ok(value)
    }

    /// Reads the watermark. Call it before the database query whose result may be
    /// cached, so that a commit racing with the query leaves the entry stale-marked.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.index.as_ref().and_then(|(index, _)| index.read()))
    }

    /// Runs `look` on the entries valid for `ticket`; `None` when there are none.
    pub fn lookup<T>(&self, ticket: Ticket, look: impl FnOnce(&Entries) -> Option<T>) -> Option<T> {
        let at = ticket.0?;
        let mut current = self.current.lock().ok()?;
        if current.at != Some(at) {
            // The database changed (or the cache is new): nothing kept is valid.
            current.at = Some(at);
            current.entries = Entries::default();
            return None;
        }
        look(&current.entries)
    }

    /// Adds what a query read after `ticket` was taken, unless the database has
    /// since been seen to change.
    pub fn keep(&self, ticket: Ticket, add: impl FnOnce(&mut Entries)) {
        let Some(at) = ticket.0 else { return };
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        if current.at == Some(at) {
            add(&mut current.entries);
        }
    }
}
