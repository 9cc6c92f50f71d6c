//! Results of the hot read queries, kept for as long as what they were read from has not
//! changed.
//!
//! The cache has two sections, each valid at one [`Stamp`]: the **tokens** (bearer token
//! checks) and the **data** (users, their groups, list pages, counts and rendered
//! answers). A request first takes a [`Ticket`], the stamps of the database as of a
//! moment after it arrived, and a section serves it only while its stamp equals the
//! ticket's; the first request that brings a newer stamp empties the section. So a
//! revoked token is refused on the very next request, and a read never returns
//! anything older than a commit that finished before the request arrived.
//!
//! Where the stamps come from:
//! - **SQLite**: the wal-index header ([`super::watermark`]), which every commit by any
//!   connection rewrites; one `pread`, no query. It moves on every commit, so both
//!   sections share it, except that a commit of this process that left the tokens table
//!   alone carries the tokens section over to the header it produced
//!   ([`ReadCache::tokens_survive`]).
//! - **PostgreSQL**: two generation counters in one row (`cache_generations`,
//!   migration 0011) that triggers bump in the transaction of every write to the
//!   tokens table, resp. users, teams and memberships; read once per request (and
//!   shared by the requests that arrive while a read is under way, see
//!   [`super::generations`]), on any replica.
//! - An in-memory SQLite database has neither: the cache is off.
//!
//! The sizes are bounded; a full map takes no more entries until the next change, which
//! keeps the memory of a store of any size to a few tens of megabytes.

use super::generations::Generations;
use super::lists::{GroupRef, Listed};
use super::tokens::TokenPrincipal;
use super::watermark::{Sentinel, WalIndex, Watermark};
use crate::domain::User;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use uuid::Uuid;

// A cached user costs about 2.5 KB (its SCIM attributes are a JSON tree): 10,000 of
// them keep the cache near 25 MB, inside the 100 MB the daemon is allowed in all.
const MAX_TOKENS: usize = 1_024;
const MAX_USERS: usize = 10_000;
const MAX_LISTS: usize = 10_000;
const MAX_COUNTS: usize = 1_024;
/// Rendered answers are kept up to this many bytes in all, and none larger than
/// [`MAX_ANSWER_BYTES`] (a page of a thousand users is better rebuilt than kept).
const MAX_ANSWERS_BYTES: usize = 16 << 20;
const MAX_ANSWER_BYTES: usize = 256 << 10;

/// The state of one section's source as of a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// SQLite's wal-index header: equal means no commit in between.
    Wal(Watermark),
    /// A PostgreSQL generation counter: only ever grows.
    Generation(i64),
}

impl Stamp {
    /// Whether `self` is known to be older than `other`. Headers have no order, so a
    /// different one always counts as news.
    fn older_than(self, other: Stamp) -> bool {
        matches!((self, other), (Stamp::Generation(a), Stamp::Generation(b)) if a < b)
    }
}

/// What a request read before it looked in the cache: the right to use entries of
/// those stamps, and to add entries under them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    pub(crate) tokens: Option<Stamp>,
    pub(crate) data: Option<Stamp>,
}

impl Ticket {
    fn both(stamp: Option<Stamp>) -> Self {
        Ticket {
            tokens: stamp,
            data: stamp,
        }
    }
}

/// A bearer token's check: who it is, if anyone, and the stamps it was checked under.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    pub principal: Option<TokenPrincipal>,
    /// Taken after the request arrived, so its reads may be served under it as well
    /// (one wal-index read a request, not one per cached lookup), as long as the
    /// request has written nothing since: a read after its own write needs a newer one.
    pub ticket: Ticket,
}

/// A rendered answer: its body and the version its ETag names.
#[derive(Debug, Clone)]
pub struct Answer {
    pub body: Bytes,
    pub version: Option<i64>,
}

#[derive(Default)]
pub struct Tokens {
    by_hash: HashMap<String, TokenPrincipal>,
}

impl Tokens {
    pub fn get(&self, hash: &str) -> Option<&TokenPrincipal> {
        self.by_hash.get(hash)
    }

    pub fn put(&mut self, hash: &str, principal: &TokenPrincipal) {
        if self.by_hash.len() < MAX_TOKENS {
            self.by_hash.insert(hash.to_owned(), principal.clone());
        }
    }
}

#[derive(Default)]
pub struct Entries {
    pub users: HashMap<Uuid, User>,
    pub groups: HashMap<Uuid, Vec<GroupRef>>,
    /// A list query (its canonical text) → the ids of the page, in order, and the total.
    pub lists: HashMap<String, Listed<Uuid>>,
    /// A filter's count query (its SQL and parameters) → how many rows match.
    pub counts: HashMap<String, u64>,
    /// Whole answers, by a key naming everything the answer depends on (see
    /// `scim::response::AnswerKey`).
    answers: HashMap<Box<[u8]>, Answer>,
    answers_bytes: usize,
}

impl Entries {
    /// The users of a cached page, or `None` if any of them is not cached.
    pub fn users_of(&self, ids: &[Uuid]) -> Option<Vec<User>> {
        ids.iter().map(|id| self.users.get(id).cloned()).collect()
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

    pub fn answer(&self, key: &[u8]) -> Option<&Answer> {
        self.answers.get(key)
    }

    pub fn put_answer(&mut self, key: &[u8], answer: &Answer) {
        let size = key.len() + answer.body.len();
        if answer.body.len() > MAX_ANSWER_BYTES
            || self.answers_bytes + size > MAX_ANSWERS_BYTES
            || self.answers.contains_key(key)
        {
            return;
        }
        self.answers_bytes += size;
        self.answers.insert(key.into(), answer.clone());
    }
}

/// One section: its entries and the stamp they are valid at.
struct Section<E> {
    at: Option<Stamp>,
    entries: E,
}

impl<E: Default> Section<E> {
    fn new() -> Self {
        Section {
            at: None,
            entries: E::default(),
        }
    }

    /// The entries, if valid at `stamp`. A newer stamp empties the section and takes
    /// its place; an older one (a slow request's) leaves it alone.
    fn valid_at(&mut self, stamp: Option<Stamp>) -> Option<&mut E> {
        let stamp = stamp?;
        match self.at {
            Some(at) if at == stamp => Some(&mut self.entries),
            Some(at) if stamp.older_than(at) => None,
            _ => {
                self.at = Some(stamp);
                self.entries = E::default();
                Some(&mut self.entries)
            }
        }
    }

    /// The entries, only if already valid at `stamp` (for adding what was read under it).
    fn still_at(&mut self, stamp: Option<Stamp>) -> Option<&mut E> {
        (stamp.is_some() && self.at == stamp).then_some(&mut self.entries)
    }
}

enum Source {
    Off,
    Wal {
        index: WalIndex,
        /// Held for the life of the cache, never used (see [`Sentinel`]).
        _sentinel: Sentinel,
    },
    Generations(Generations),
}

pub struct ReadCache {
    source: Source,
    tokens: Mutex<Section<Tokens>>,
    data: Mutex<Section<Entries>>,
    token_hits: AtomicU64,
    token_misses: AtomicU64,
}

/// How many token checks were answered from the cache and how many read the database,
/// since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub token_hits: u64,
    pub token_misses: u64,
}

impl ReadCache {
    fn with(source: Source) -> Self {
        ReadCache {
            source,
            tokens: Mutex::new(Section::new()),
            data: Mutex::new(Section::new()),
            token_hits: AtomicU64::new(0),
            token_misses: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            token_hits: self.token_hits.load(Ordering::Relaxed),
            token_misses: self.token_misses.load(Ordering::Relaxed),
        }
    }

    /// A cache that never holds anything.
    pub fn off() -> Self {
        Self::with(Source::Off)
    }

    /// SQLite: validated by the wal-index header.
    pub fn on(index: WalIndex, sentinel: Sentinel) -> Self {
        Self::with(Source::Wal {
            index,
            _sentinel: sentinel,
        })
    }

    /// PostgreSQL: validated by the generations row.
    pub fn generations(generations: Generations) -> Self {
        Self::with(Source::Generations(generations))
    }

    /// The stamps of the database as of a moment after the current request arrived
    /// (see [`super::as_of`]). Take it before the database query whose result may be
    /// cached, so that a commit racing with the query leaves the entry stale-marked.
    pub async fn ticket(&self) -> Ticket {
        match &self.source {
            Source::Off => Ticket::default(),
            Source::Wal { index, .. } => Ticket::both(index.read().map(Stamp::Wal)),
            Source::Generations(generations) => generations.ticket().await,
        }
    }

    /// SQLite: the current wal-index header, for a writer to note before and after
    /// its commit.
    pub fn watermark(&self) -> Option<Watermark> {
        match &self.source {
            Source::Wal { index, .. } => index.read(),
            _ => None,
        }
    }

    /// Whether this cache is validated by the wal-index header.
    pub fn is_wal(&self) -> bool {
        matches!(self.source, Source::Wal { .. })
    }

    /// A commit of this process finished: on PostgreSQL, later tickets must come from a
    /// generations read that began after it (the committing request reads back what
    /// it wrote, possibly in another task than the one that wrote it).
    pub fn committed(&self) {
        if let Source::Generations(generations) = &self.source {
            generations.committed();
        }
    }

    /// SQLite: this process's commit took the database from `before` to `after`, with
    /// no other commit in between, and did not change the tokens table. A tokens
    /// section valid at `before` is therefore valid at `after`: a write to users does
    /// not send the next token check to the database.
    pub fn tokens_survive(&self, before: Watermark, after: Watermark) {
        if let Ok(mut section) = self.tokens.lock() {
            if section.at == Some(Stamp::Wal(before)) {
                section.at = Some(Stamp::Wal(after));
            }
        }
    }

    /// A token check: the cached principal when the ticket allows, else `read`'s,
    /// kept for the checks that follow; and the ticket it was checked under, which the
    /// request may serve its own reads under (see [`TokenCheck::ticket`]).
    pub async fn token<E>(
        &self,
        hash: &str,
        read: impl std::future::Future<Output = Result<Option<TokenPrincipal>, E>>,
    ) -> Result<TokenCheck, E> {
        let ticket = self.ticket().await;
        let hit = self.tokens.lock().ok().and_then(|mut section| {
            section
                .valid_at(ticket.tokens)
                .and_then(|tokens| tokens.get(hash).cloned())
        });
        if let Some(principal) = hit {
            self.token_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(TokenCheck {
                principal: Some(principal),
                ticket,
            });
        }
        self.token_misses.fetch_add(1, Ordering::Relaxed);
        let principal = read.await?;
        if let (Some(principal), Ok(mut section)) = (&principal, self.tokens.lock()) {
            if let Some(tokens) = section.still_at(ticket.tokens) {
                tokens.put(hash, principal);
            }
        }
        Ok(TokenCheck { principal, ticket })
    }

    /// The read-through every cached data query shares: the answer from the cache when
    /// it holds one, else `read`'s, kept for the requests that follow. `read` is a
    /// future not yet polled, so the ticket is taken before its query starts.
    pub async fn through<T, E>(
        &self,
        look: impl FnOnce(&Entries) -> Option<T>,
        read: impl std::future::Future<Output = Result<T, E>>,
        keep: impl FnOnce(&mut Entries, &T),
    ) -> Result<T, E> {
        let ticket = self.ticket().await;
        self.through_at(ticket, look, read, keep).await
    }

    /// [`ReadCache::through`] under a ticket the caller already holds, which must
    /// have been taken after its request arrived and before anything the request
    /// wrote.
    pub async fn through_at<T, E>(
        &self,
        ticket: Ticket,
        look: impl FnOnce(&Entries) -> Option<T>,
        read: impl std::future::Future<Output = Result<T, E>>,
        keep: impl FnOnce(&mut Entries, &T),
    ) -> Result<T, E> {
        if let Some(hit) = self.lookup(ticket, look) {
            return Ok(hit);
        }
        let value = read.await?;
        self.keep(ticket, |entries| keep(entries, &value));
        Ok(value)
    }

    /// Runs `look` on the data entries valid for `ticket`; `None` when there are none.
    pub fn lookup<T>(&self, ticket: Ticket, look: impl FnOnce(&Entries) -> Option<T>) -> Option<T> {
        let mut section = self.data.lock().ok()?;
        look(section.valid_at(ticket.data)?)
    }

    /// Adds what a query read after `ticket` was taken, unless the database has
    /// since been seen to change.
    pub fn keep(&self, ticket: Ticket, add: impl FnOnce(&mut Entries)) {
        if let Ok(mut section) = self.data.lock() {
            if let Some(entries) = section.still_at(ticket.data) {
                add(entries);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(tokens: i64, data: i64) -> Ticket {
        Ticket {
            tokens: Some(Stamp::Generation(tokens)),
            data: Some(Stamp::Generation(data)),
        }
    }

    fn principal() -> TokenPrincipal {
        TokenPrincipal {
            name: "t".into(),
            scope: crate::domain::TokenScope::Scim,
            idp: "default".into(),
        }
    }

    #[test]
    fn a_section_serves_only_the_stamp_it_was_filled_at_and_a_newer_one_empties_it() {
        let mut section: Section<Tokens> = Section::new();
        let at_1 = generation(1, 1);
        section
            .valid_at(at_1.tokens)
            .expect("a first stamp")
            .put("h", &principal());
        assert!(section
            .valid_at(at_1.tokens)
            .expect("same stamp")
            .get("h")
            .is_some());
        // A slow request's older stamp neither serves nor resets.
        assert!(section.valid_at(Some(Stamp::Generation(0))).is_none());
        assert!(section
            .valid_at(at_1.tokens)
            .expect("still")
            .get("h")
            .is_some());
        let newer = section.valid_at(Some(Stamp::Generation(2))).expect("newer");
        assert!(newer.get("h").is_none(), "emptied by the newer stamp");
        assert!(
            section.still_at(at_1.tokens).is_none(),
            "old reads are not kept"
        );
        assert!(section.valid_at(None).is_none(), "no stamp, no cache");
    }

    #[test]
    fn answers_are_bounded_by_bytes_in_all_and_each() {
        let mut entries = Entries::default();
        let big = Answer {
            body: Bytes::from(vec![b'x'; MAX_ANSWER_BYTES + 1]),
            version: None,
        };
        entries.put_answer(b"big", &big);
        assert!(entries.answer(b"big").is_none());
        let body = Bytes::from(vec![b'x'; MAX_ANSWER_BYTES]);
        let mut kept = 0;
        for i in 0..(MAX_ANSWERS_BYTES / MAX_ANSWER_BYTES + 10) {
            let key = i.to_string();
            entries.put_answer(
                key.as_bytes(),
                &Answer {
                    body: body.clone(),
                    version: Some(1),
                },
            );
            kept += usize::from(entries.answer(key.as_bytes()).is_some());
        }
        assert!(entries.answers_bytes <= MAX_ANSWERS_BYTES);
        assert!(kept < MAX_ANSWERS_BYTES / MAX_ANSWER_BYTES + 10);
    }
}
