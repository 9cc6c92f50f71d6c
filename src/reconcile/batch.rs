//! Group commit for SCIM creates.
//!
//! A POST /Users holds the writer lock for three round trips to SQLite's worker thread
//! (BEGIN, its INSERT, its audit rows with the COMMIT), and every other writer waits
//! for them. When creates arrive faster than that, the ones queued behind the lock are
//! better applied together: one task takes every create waiting, applies each in turn
//! in one transaction and commits once, so a create costs about one round trip.
//!
//! Only desired states that create users with fresh ids are taken
//! ([`super::load::only_creates_new_users`]). Such a create either succeeds or is
//! refused before it has written anything (its userName is taken: the INSERT did
//! nothing), so one refused create never undoes the others; a database error, after
//! which nothing is known, fails the whole batch. Each caller is answered only once
//! the batch has committed.

use super::apply::ApplyError;
use super::engine::{apply_in, Applied as Done, EngineError, Request};
use super::{Actor, Desired, Policy};
use crate::config::Config;
use crate::store::{Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Creates in one transaction at most; enough to drain a queue of many clients,
/// small enough that one batch never holds the lock for long.
const MAX_BATCH: usize = 64;

type Applied = Result<Done, EngineError>;

struct Job {
    desired: Desired,
    actor: Actor,
    reply: oneshot::Sender<Applied>,
}

/// The queue of creates and the task that applies them (which ends when the last
/// `CreateBatcher` clone is dropped).
#[derive(Clone)]
pub struct CreateBatcher {
    queue: mpsc::Sender<Job>,
    committed: Arc<Committed>,
}

/// What the batches committed so far add up to.
#[derive(Debug, Default)]
struct Committed {
    transactions: AtomicU64,
    creates: AtomicU64,
}

impl CreateBatcher {
    /// Starts the applying task; `config` gives the policy each batch is applied under.
    pub fn start(store: Store, config: watch::Receiver<Arc<Config>>) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let committed = Arc::new(Committed::default());
        tokio::spawn(run(store, config, jobs, committed.clone()));
        Self { queue, committed }
    }

    /// Transactions and creates committed since start.
    pub fn committed(&self) -> (u64, u64) {
        (
            self.committed.transactions.load(Ordering::Relaxed),
            self.committed.creates.load(Ordering::Relaxed),
        )
    }

    /// Applies `desired`, which must only create users with fresh ids, and commits it
    /// (with whatever other creates were waiting). The write completes even if the
    /// caller stops waiting.
    pub async fn create(&self, desired: Desired, actor: Actor) -> Applied {
        if !super::load::only_creates_new_users(&desired) {
            return Err(EngineError::Plan(super::PlanError::Invalid(
                "only the creation of new users is applied in batches".into(),
            )));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            desired,
            actor,
            reply,
        };
        if self.queue.send(job).await.is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> EngineError {
    EngineError::Store(StoreError::Database(sqlx::Error::WorkerCrashed))
}

async fn run(
    store: Store,
    config: watch::Receiver<Arc<Config>>,
    mut jobs: mpsc::Receiver<Job>,
    committed: Arc<Committed>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let policy = Policy::from_config(&config.borrow(), crate::store::now());
        if let Some(creates) = apply_batch(&store, &policy, std::mem::take(&mut batch)).await {
            committed.transactions.fetch_add(1, Ordering::Relaxed);
            committed
                .creates
                .fetch_add(creates as u64, Ordering::Relaxed);
            crate::metrics::create_batch(creates);
        }
    }
}

/// Applies `jobs` in one transaction and answers each; `Some(creates committed)`
/// when it committed.
async fn apply_batch(store: &Store, policy: &Policy, jobs: Vec<Job>) -> Option<usize> {
    let size = jobs.len();
    let mut tx = match store.begin_write().await {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(jobs.into_iter().map(|j| j.reply), &e);
            return None;
        }
    };
    let mut applied = Vec::with_capacity(size);
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        match apply_in(&mut tx, Request::new(&job.desired, policy, &job.actor)).await {
            Ok(result) => applied.push((job.reply, result)),
            // Nothing is known of the transaction now: it is rolled back (dropped).
            Err(EngineError::Store(e) | EngineError::Apply(ApplyError::Store(e))) => {
                let waiting = applied.into_iter().map(|(reply, _)| reply);
                fail_all(waiting.chain(jobs.map(|j| j.reply)), &e);
                let _ = job.reply.send(Err(EngineError::Store(e)));
                return None;
            }
            // Refused before it wrote anything; the others go on.
            Err(refused) => {
                let _ = job.reply.send(Err(refused));
            }
        }
    }
    match tx.commit().await {
        Ok(()) => {
            let creates = applied.len();
            tracing::debug!(size, creates, "committed a batch of creates");
            for (reply, result) in applied {
                let _ = reply.send(Ok(result));
            }
            Some(creates)
        }
        Err(e) => {
            fail_all(applied.into_iter().map(|(reply, _)| reply), &e);
            None
        }
    }
}

/// Answers every waiting caller with a database error (whose text only reaches the
/// log: the client sees a 500 without it).
fn fail_all(replies: impl Iterator<Item = oneshot::Sender<Applied>>, cause: &StoreError) {
    tracing::warn!(error = %cause, "a batch of creates failed");
    for reply in replies {
        let error = StoreError::Database(sqlx::Error::Protocol(format!(
            "the batch this create was in failed: {cause}"
        )));
        let _ = reply.send(Err(EngineError::Store(error)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Source, UserName};
    use crate::reconcile::{DesiredUser, Intent, Scope};
    use crate::store::Store;
    use uuid::Uuid;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("batch.db").display());
        let store = Store::open(&url, 2).await.expect("store");
        (dir, store)
    }

    fn create(name: &str) -> Desired {
        let mut desired = Desired::new(Source::Scim("default".into()), Scope::Listed);
        let mut user = DesiredUser::new(UserName::parse(name).expect("name"));
        user.id = Some(Uuid::new_v4());
        user.intent = Intent::Create;
        desired.users.push(user);
        desired
    }

    fn actor() -> Actor {
        Actor::new(crate::domain::Trigger::Scim, "okta")
    }

    /// Jobs for `apply_batch`, and where their answers arrive.
    fn jobs(names: &[&str]) -> (Vec<Job>, Vec<oneshot::Receiver<Applied>>) {
        names
            .iter()
            .map(|name| {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    desired: create(name),
                    actor: actor(),
                    reply,
                };
                (job, answer)
            })
            .unzip()
    }

    async fn exists(store: &Store, name: &str) -> bool {
        let name = UserName::parse(name).expect("name");
        store.user_by_name(&name).await.expect("read").is_some()
    }

    #[tokio::test]
    async fn creates_that_queue_up_together_commit_in_one_transaction() {
        let (_dir, store) = store().await;
        let (_config, receiver) = watch::channel(Arc::new(Config::default()));
        let batcher = CreateBatcher::start(store.clone(), receiver);
        let names: Vec<String> = (0..20).map(|i| format!("user{i}@example.com")).collect();
        let creates = names.iter().map(|n| batcher.create(create(n), actor()));
        for result in futures::future::join_all(creates).await {
            result.expect("created");
        }
        for name in &names {
            assert!(exists(&store, name).await, "{name}");
        }
        let (transactions, creates) = batcher.committed();
        assert_eq!(creates, 20);
        assert!(
            transactions < 20,
            "{transactions} transactions for 20 creates"
        );
    }

    #[tokio::test]
    async fn a_refused_create_leaves_the_others_in_its_batch_alone() {
        let (_dir, store) = store().await;
        let (seed, _) = jobs(&["taken@example.com"]);
        apply_batch(&store, &Policy::default(), seed).await;

        let names = [
            "a@example.com",
            "TAKEN@example.com",
            "b@example.com",
            "a@EXAMPLE.com",
        ];
        let (batch, answers) = jobs(&names);
        assert_eq!(
            apply_batch(&store, &Policy::default(), batch).await,
            Some(2)
        );
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(match answer.await.expect("answered") {
                Ok(_) => "created".to_owned(),
                Err(e) => e.to_string(),
            });
        }
        assert_eq!(outcomes[0], "created");
        assert!(outcomes[1].contains("already taken"), "{}", outcomes[1]);
        assert_eq!(outcomes[2], "created");
        assert!(outcomes[3].contains("already taken"), "{}", outcomes[3]);
        assert!(exists(&store, "a@example.com").await);
        assert!(exists(&store, "b@example.com").await);
        let audited = store.audit_since(None).await.expect("audit").len();
        assert_eq!(
            audited, 3,
            "one audit row per user created, none for the refused"
        );
    }

    #[tokio::test]
    async fn a_database_error_fails_the_whole_batch_and_keeps_none_of_it() {
        let (_dir, store) = store().await;
        sqlx::query(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON users WHEN NEW.user_name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
        )
        .execute(store.pool())
        .await
        .expect("trigger");

        let (batch, answers) = jobs(&["first@example.com", "boom", "last@example.com"]);
        assert_eq!(apply_batch(&store, &Policy::default(), batch).await, None);
        for answer in answers {
            let outcome = answer.await.expect("answered");
            assert!(matches!(outcome, Err(EngineError::Store(_))), "{outcome:?}");
        }
        assert!(!exists(&store, "first@example.com").await);
        assert!(!exists(&store, "last@example.com").await);
        assert!(store.audit_since(None).await.expect("audit").is_empty());

        let (next, _) = jobs(&["next@example.com"]);
        assert_eq!(apply_batch(&store, &Policy::default(), next).await, Some(1));
        assert!(exists(&store, "next@example.com").await);
    }
}
