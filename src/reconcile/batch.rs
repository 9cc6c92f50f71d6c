//! Group commit for SCIM writes.
//!
//! A write holds the writer lock for several round trips to the database (SQLite's
//! worker thread, or PostgreSQL's socket), and every other writer waits for them. When
//! writes arrive faster than that, the ones queued behind the lock are better applied
//! together: one task takes every write waiting, applies each in turn in one
//! transaction and commits once, so a write no longer pays a BEGIN and a COMMIT of its
//! own. Each caller is answered only once the commit that holds its change is known,
//! refusals included (a 412 that an earlier change of the same batch caused must not
//! be told about a change that then failed to commit); a failed commit fails every
//! write of the batch with [`EngineError::NotCommitted`].
//!
//! Two kinds of write are taken:
//! - creates of users with fresh ids ([`super::load::only_creates_new_users`]), which
//!   either succeed or are refused before writing anything (their userName is taken:
//!   the INSERT did nothing), so they need no savepoint; a database error, after which
//!   nothing is known, fails the whole batch;
//! - changes computed from one user or team as it is now (SCIM PUT and PATCH), each in
//!   a savepoint of its own: one that is refused (If-Match, a bad value, a vanished
//!   target, another IdP's resource, a guard, even a database error the savepoint
//!   survives) is undone alone and the others commit. Each reads its target inside the
//!   transaction, after the changes queued before it, so two PATCHes of one group with
//!   the same If-Match in one batch are judged in order: the first wins, the second
//!   gets 412. Their audit and outbox rows are those of the one-at-a-time path (the
//!   same `apply_in`), and go or stay with their savepoint.

use super::apply::ApplyError;
use super::engine::{
    apply_in, change_in_savepoint, Applied as Done, EngineError, Expect, Request, Target,
};
use super::{Actor, Desired, Policy};
use crate::config::Config;
use crate::domain::{Team, User};
use crate::store::{Savepoint, Store, StoreError, WriteTx};
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

/// Writes in one transaction at most; enough to drain a queue of many clients,
/// small enough that one batch never holds the lock for long (and, on PostgreSQL,
/// that a batch's subtransactions stay within what each backend caches).
const MAX_BATCH: usize = 64;

/// The savepoint each change runs in (nested ones of one name are told apart by
/// their order, which is all `ROLLBACK TO` needs).
const SAVEPOINT: &str = "scimsync_change";

type Applied = Result<Done, EngineError>;

/// Tells a caller its fate once the batch's commit is known: `None` when it committed.
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// What one write did in the batch's transaction.
enum Outcome {
    Applied(Answer),
    /// Refused; what it wrote since its savepoint, if it has one, is to be undone.
    Refused(Answer),
    /// The transaction can no longer be trusted (a create's database error).
    Broken(StoreError, Answer),
}

/// A write waiting for a batch.
trait Job: Send {
    /// Runs the write in `tx`, returning the savepoint it took to be undone alone, if
    /// it needs one; creates are judged by `policy`, the configuration's at the start
    /// of the batch (a change carries its caller's).
    fn run<'t>(
        self: Box<Self>,
        tx: &'t mut WriteTx,
        policy: &'t Policy,
    ) -> BoxFuture<'t, (Option<Savepoint>, Outcome)>;
    /// Whether this is a create (counted apart from changes).
    fn is_create(&self) -> bool;
    /// Answers the caller that its write was not applied, without running it.
    fn fail(self: Box<Self>, cause: &StoreError);
}

/// The queue of writes and the task that applies them (which ends when the last
/// `WriteBatcher` clone is dropped).
#[derive(Clone)]
pub struct WriteBatcher {
    queue: mpsc::Sender<Box<dyn Job>>,
    counts: Arc<Counts>,
}

/// What the batches add up to so far.
#[derive(Debug, Default)]
struct Counts {
    queued: AtomicU64,
    transactions: AtomicU64,
    writes: AtomicU64,
}

impl WriteBatcher {
    /// Starts the applying task; `config` gives the policy creates are applied under.
    pub fn start(store: Store, config: watch::Receiver<Arc<Config>>) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(store, config, jobs, counts.clone()));
        Self { queue, counts }
    }

    /// Transactions committed since start, and the writes they applied.
    pub fn committed(&self) -> (u64, u64) {
        (
            self.counts.transactions.load(Ordering::Relaxed),
            self.counts.writes.load(Ordering::Relaxed),
        )
    }

    /// Writes handed to the applying task since start (for tests that hold the writer
    /// lock until a known number of writes wait, so that they form one batch).
    pub fn queued(&self) -> u64 {
        self.counts.queued.load(Ordering::Relaxed)
    }

    /// Applies `desired`, which must only create users with fresh ids, and commits it
    /// (with whatever other writes were waiting). The write completes even if the
    /// caller stops waiting.
    pub async fn create(&self, desired: Desired, actor: Actor) -> Applied {
        if !super::load::only_creates_new_users(&desired) {
            return Err(EngineError::Plan(super::PlanError::Invalid(
                "only the creation of new users is applied in batches".into(),
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.submit(Box::new(Create {
            desired,
            actor,
            reply,
        }))
        .await;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// [`super::Engine::change_user`], committed with whatever other writes are waiting.
    pub async fn change_user<E, B>(
        &self,
        id: Uuid,
        expect: Expect,
        policy: Policy,
        actor: Actor,
        build: B,
    ) -> Result<Done, E>
    where
        E: From<EngineError> + Send + 'static,
        B: FnOnce(&User) -> Result<Desired, E> + Send + 'static,
    {
        self.change(id, expect, policy, actor, build).await
    }

    /// [`super::Engine::change_team`], committed with whatever other writes are waiting.
    pub async fn change_team<E, B>(
        &self,
        id: Uuid,
        expect: Expect,
        policy: Policy,
        actor: Actor,
        build: B,
    ) -> Result<Done, E>
    where
        E: From<EngineError> + Send + 'static,
        B: FnOnce(&Team) -> Result<Desired, E> + Send + 'static,
    {
        self.change(id, expect, policy, actor, build).await
    }

    async fn change<T: Target, E: From<EngineError> + Send + 'static>(
        &self,
        id: Uuid,
        expect: Expect,
        policy: Policy,
        actor: Actor,
        build: impl FnOnce(&T) -> Result<Desired, E> + Send + 'static,
    ) -> Result<Done, E> {
        let (reply, answer) = oneshot::channel();
        self.submit(Box::new(Change {
            id,
            expect,
            policy,
            actor,
            build: Box::new(build),
            reply,
        }))
        .await;
        answer.await.unwrap_or_else(|_| Err(stopped().into()))
    }

    /// Queues `job`; a job the task is gone for is answered at once.
    async fn submit(&self, job: Box<dyn Job>) {
        match self.queue.send(job).await {
            Ok(()) => {
                self.counts.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::SendError(job)) => job.fail(&stopped_cause()),
        }
    }
}

fn stopped_cause() -> StoreError {
    StoreError::Database(sqlx::Error::WorkerCrashed)
}

fn stopped() -> EngineError {
    EngineError::Store(stopped_cause())
}

/// A user create.
struct Create {
    desired: Desired,
    actor: Actor,
    reply: oneshot::Sender<Applied>,
}

impl Job for Create {
    fn run<'t>(
        self: Box<Self>,
        tx: &'t mut WriteTx,
        policy: &'t Policy,
    ) -> BoxFuture<'t, (Option<Savepoint>, Outcome)> {
        Box::pin(async move {
            let Create {
                desired,
                actor,
                reply,
            } = *self;
            // No savepoint: a create that is refused has written nothing.
            let outcome = match apply_in(tx, Request::new(&desired, policy, &actor)).await {
                // Nothing is known of the transaction now.
                Err(EngineError::Store(e) | EngineError::Apply(ApplyError::Store(e))) => {
                    let cause = StoreError::Database(sqlx::Error::Protocol(e.to_string()));
                    Outcome::Broken(e, answer(reply, Err(EngineError::Store(cause))))
                }
                Ok(done) => Outcome::Applied(answer(reply, Ok(done))),
                // Refused before it wrote anything.
                Err(refused) => Outcome::Refused(answer(reply, Err(refused))),
            };
            (None, outcome)
        })
    }

    fn is_create(&self) -> bool {
        true
    }

    fn fail(self: Box<Self>, cause: &StoreError) {
        let _ = self.reply.send(Err(not_committed(cause)));
    }
}

/// The caller's function from the target of a change as it is now to the desired state.
type BuildFrom<T, E> = Box<dyn FnOnce(&T) -> Result<Desired, E> + Send>;

/// A change computed from one user or team as it is now.
struct Change<T, E> {
    id: Uuid,
    expect: Expect,
    policy: Policy,
    actor: Actor,
    build: BuildFrom<T, E>,
    reply: oneshot::Sender<Result<Done, E>>,
}

impl<T: Target, E: From<EngineError> + Send + 'static> Job for Change<T, E> {
    fn run<'t>(
        self: Box<Self>,
        tx: &'t mut WriteTx,
        _: &'t Policy,
    ) -> BoxFuture<'t, (Option<Savepoint>, Outcome)> {
        Box::pin(async move {
            let Change {
                id,
                expect,
                policy,
                actor,
                build,
                reply,
            } = *self;
            let (savepoint, result) =
                change_in_savepoint(tx, SAVEPOINT, id, &expect, &policy, &actor, build).await;
            let outcome = match result {
                Ok(done) => Outcome::Applied(answer(reply, Ok(done))),
                Err(refused) => Outcome::Refused(answer(reply, Err(refused))),
            };
            (savepoint, outcome)
        })
    }

    fn is_create(&self) -> bool {
        false
    }

    fn fail(self: Box<Self>, cause: &StoreError) {
        let _ = self.reply.send(Err(not_committed(cause).into()));
    }
}

/// The answer to give once the commit is known: `result` if it committed.
fn answer<E: From<EngineError> + Send + 'static>(
    reply: oneshot::Sender<Result<Done, E>>,
    result: Result<Done, E>,
) -> Answer {
    Box::new(move |failed| {
        let _ = reply.send(match failed {
            None => result,
            Some(cause) => Err(not_committed(cause).into()),
        });
    })
}

/// What a write that was not applied because its batch failed is told (the cause
/// reaches only the log: see src/error.rs).
fn not_committed(cause: &StoreError) -> EngineError {
    EngineError::NotCommitted(cause.to_string())
}

async fn run(
    store: Store,
    config: watch::Receiver<Arc<Config>>,
    mut jobs: mpsc::Receiver<Box<dyn Job>>,
    counts: Arc<Counts>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let tx = store.begin_write().await;
        // Whatever queued up while the writer lock was busy joins this batch.
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let policy = Policy::from_config(&config.borrow(), crate::store::now());
        if let Some(done) = apply_batch(tx, &policy, std::mem::take(&mut batch)).await {
            counts.transactions.fetch_add(1, Ordering::Relaxed);
            let writes = done.creates + done.changes;
            counts.writes.fetch_add(writes as u64, Ordering::Relaxed);
            if done.creates > 0 {
                crate::metrics::create_batch(done.creates);
            }
            if done.changes > 0 {
                crate::metrics::change_batch(done.changes);
            }
        }
    }
}

/// What a committed batch applied.
#[derive(Debug, Default, PartialEq, Eq)]
struct Committed {
    creates: usize,
    changes: usize,
}

/// Applies `jobs` in `tx` and answers each once the commit is known; what it applied
/// when it committed.
async fn apply_batch(
    tx: Result<WriteTx, StoreError>,
    policy: &Policy,
    jobs: Vec<Box<dyn Job>>,
) -> Option<Committed> {
    let size = jobs.len();
    let mut tx = match tx {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(Vec::new(), jobs, &e);
            return None;
        }
    };
    let mut answers: Vec<Answer> = Vec::with_capacity(size);
    let mut done = Committed::default();
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        let create = job.is_create();
        let (savepoint, outcome) = job.run(&mut tx, policy).await;
        match outcome {
            Outcome::Applied(answer) => {
                match create {
                    true => done.creates += 1,
                    false => done.changes += 1,
                }
                answers.push(answer);
            }
            Outcome::Refused(answer) => {
                let undone = match savepoint {
                    Some(savepoint) => tx.rollback_to(savepoint).await,
                    None => Ok(()),
                };
                if let Err(e) = undone {
                    answers.push(answer);
                    fail_all(answers, jobs, &e);
                    return None;
                }
                answers.push(answer);
            }
            Outcome::Broken(e, answer) => {
                // The write that broke the transaction is told its own error.
                answer(None);
                fail_all(answers, jobs, &e);
                return None;
            }
        }
    }
    match tx.commit().await {
        Ok(()) => {
            tracing::debug!(size, ?done, "committed a batch of writes");
            answers.into_iter().for_each(|answer| answer(None));
            Some(done)
        }
        Err(e) => {
            fail_all(answers, Vec::new(), &e);
            None
        }
    }
}

/// Answers every write of a failed batch: those that ran and those still waiting.
/// (The transaction is rolled back when the caller drops it.)
fn fail_all(
    answers: Vec<Answer>,
    waiting: impl IntoIterator<Item = Box<dyn Job>>,
    cause: &StoreError,
) {
    tracing::warn!(error = %cause, "a batch of writes failed; none of it was applied");
    answers.into_iter().for_each(|answer| answer(Some(cause)));
    waiting.into_iter().for_each(|job| job.fail(cause));
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
    fn jobs(names: &[&str]) -> (Vec<Box<dyn Job>>, Vec<oneshot::Receiver<Applied>>) {
        names
            .iter()
            .map(|name| {
                let (reply, answer) = oneshot::channel();
                let job: Box<dyn Job> = Box::new(Create {
                    desired: create(name),
                    actor: actor(),
                    reply,
                });
                (job, answer)
            })
            .unzip()
    }

    /// Applies `jobs` in a transaction of their own, as the batching task does.
    async fn batch(store: &Store, jobs: Vec<Box<dyn Job>>) -> Option<Committed> {
        apply_batch(store.begin_write().await, &Policy::default(), jobs).await
    }

    fn creates(n: usize) -> Option<Committed> {
        Some(Committed {
            creates: n,
            changes: 0,
        })
    }

    async fn exists(store: &Store, name: &str) -> bool {
        let name = UserName::parse(name).expect("name");
        store.user_by_name(&name).await.expect("read").is_some()
    }

    #[tokio::test]
    async fn creates_that_queue_up_together_commit_in_one_transaction() {
        let (_dir, store) = store().await;
        let (_config, receiver) = watch::channel(Arc::new(Config::default()));
        let batcher = WriteBatcher::start(store.clone(), receiver);
        let names: Vec<String> = (0..20).map(|i| format!("user{i}@example.com")).collect();
        let creates = names.iter().map(|n| batcher.create(create(n), actor()));
        for result in futures::future::join_all(creates).await {
            result.expect("created");
        }
        for name in &names {
            assert!(exists(&store, name).await, "{name}");
        }
        let (transactions, writes) = batcher.committed();
        assert_eq!(writes, 20);
        assert!(
            transactions < 20,
            "{transactions} transactions for 20 creates"
        );
    }

    #[tokio::test]
    async fn a_refused_create_leaves_the_others_in_its_batch_alone() {
        let (_dir, store) = store().await;
        let (seed, _) = jobs(&["taken@example.com"]);
        batch(&store, seed).await;

        let names = [
            "a@example.com",
            "TAKEN@example.com",
            "b@example.com",
            "a@EXAMPLE.com",
        ];
        let (jobs_of_batch, answers) = jobs(&names);
        assert_eq!(batch(&store, jobs_of_batch).await, creates(2));
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

        let (jobs_of_batch, answers) = jobs(&["first@example.com", "boom", "last@example.com"]);
        assert_eq!(batch(&store, jobs_of_batch).await, None);
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.expect("answered"));
        }
        assert!(
            matches!(outcomes[1], Err(EngineError::Store(_))),
            "the create that failed is told its own error: {:?}",
            outcomes[1]
        );
        for other in [&outcomes[0], &outcomes[2]] {
            assert!(
                matches!(other, Err(EngineError::NotCommitted(_))),
                "{other:?}"
            );
        }
        assert!(!exists(&store, "first@example.com").await);
        assert!(!exists(&store, "last@example.com").await);
        assert!(store.audit_since(None).await.expect("audit").is_empty());

        let (next, _) = jobs(&["next@example.com"]);
        assert_eq!(batch(&store, next).await, creates(1));
        assert!(exists(&store, "next@example.com").await);
    }
}
