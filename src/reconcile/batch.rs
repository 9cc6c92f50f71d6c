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
//!   same `apply_in`), and go or stay with their savepoint;
//! - member changes (a SCIM PATCH that only adds and removes members of one group, by
//!   user id: what Entra and Okta send for every membership change). Consecutive ones
//!   are applied together where the order between them cannot matter (see
//!   [`merge_groups`]): the member changes of one team, from one actor, none naming a
//!   user another of the run names, become one change of that team, with one read of
//!   it, one lookup of the users and one INSERT. If that merged change is refused for
//!   any reason, it is undone to its savepoint and its PATCHes run one by one, so each
//!   is judged on its own exactly as it would have been alone.

use super::apply::{ApplyError, ApplySummary};
use super::engine::{
    apply_in, change_in_savepoint, Applied as Done, EngineError, Expect, Request, Target,
};
use super::ops::{Op, Plan};
use super::{Actor, Desired, DesiredTeam, Intent, MemberRef, MemberSpec, Policy, Scope};
use crate::config::Config;
use crate::domain::{Team, User};
use crate::store::actual::TeamKey;
use crate::store::{Savepoint, Store, StoreError, WriteTx};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
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

/// What a member change did, and its team as the batch committed it (read once per
/// batch and team, before the COMMIT, so that answering the PATCH needs no read of
/// its own; `None` if that read found nothing).
#[derive(Debug)]
pub struct MembersChanged {
    pub applied: Done,
    pub team: Option<Team>,
}

/// Where the batch leaves a team as it committed it, for the member changes of it.
type TeamSlot = Arc<std::sync::OnceLock<Team>>;

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

impl Outcome {
    /// A change's outcome from its result, with the answer `answer` makes of it.
    fn settled<E>(result: Result<Done, E>, answer: impl FnOnce(Result<Done, E>) -> Answer) -> Self {
        match result.is_ok() {
            true => Outcome::Applied(answer(result)),
            false => Outcome::Refused(answer(result)),
        }
    }
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

/// What waits in the queue: member changes apart, since consecutive ones may merge.
enum Queued {
    Job(Box<dyn Job>),
    Create(Create),
    Members(MemberChange),
}

impl Queued {
    fn fail(self, cause: &StoreError) {
        match self {
            Queued::Job(job) => job.fail(cause),
            Queued::Create(create) => Box::new(create).fail(cause),
            Queued::Members(change) => Box::new(change).fail(cause),
        }
    }
}

/// The queue of writes and the task that applies them (which ends when the last
/// `WriteBatcher` clone is dropped).
#[derive(Clone)]
pub struct WriteBatcher {
    queue: mpsc::Sender<Queued>,
    counts: Arc<Counts>,
}

/// What the batches add up to so far.
#[derive(Debug, Default)]
struct Counts {
    queued: AtomicU64,
    transactions: AtomicU64,
    writes: AtomicU64,
    merged: AtomicU64,
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

    /// Committed writes that were applied as part of a merged change (creates of one
    /// actor, or member changes of one team, applied as one).
    pub fn merged(&self) -> u64 {
        self.counts.merged.load(Ordering::Relaxed)
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
        self.submit(Queued::Create(Create {
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
        self.submit(Queued::Job(Box::new(Change {
            id,
            expect,
            policy,
            actor,
            build: Box::new(build),
            reply,
        })))
        .await;
        answer.await.unwrap_or_else(|_| Err(stopped().into()))
    }

    /// Adds the users `add` to team `team` and takes the users `remove` out of it (a
    /// SCIM PATCH of members only; the two lists name no user twice), committed with
    /// whatever other writes are waiting and, where that cannot change what any of them
    /// does, merged with the other member changes among them.
    pub async fn change_members(
        &self,
        team: Uuid,
        add: Vec<Uuid>,
        remove: Vec<Uuid>,
        expect: Expect,
        policy: Policy,
        actor: Actor,
    ) -> Result<MembersChanged, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Queued::Members(MemberChange {
            team,
            add,
            remove,
            expect,
            policy,
            actor,
            reply,
            committed: TeamSlot::default(),
        }))
        .await;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues `job`; a job the task is gone for is answered at once.
    async fn submit(&self, job: Queued) {
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
            (savepoint, Outcome::settled(result, |r| answer(reply, r)))
        })
    }

    fn is_create(&self) -> bool {
        false
    }

    fn fail(self: Box<Self>, cause: &StoreError) {
        let _ = self.reply.send(Err(not_committed(cause).into()));
    }
}

/// A SCIM PATCH that only adds and removes members of one team, by user id.
struct MemberChange {
    team: Uuid,
    add: Vec<Uuid>,
    remove: Vec<Uuid>,
    expect: Expect,
    policy: Policy,
    actor: Actor,
    reply: oneshot::Sender<Result<MembersChanged, EngineError>>,
    /// Its team as the batch commits it (shared by the batch's changes of the team).
    committed: TeamSlot,
}

impl MemberChange {
    /// The answer to give once the commit is known.
    fn answer(self, result: Applied) -> Answer {
        let (reply, committed) = (self.reply, self.committed);
        Box::new(move |failed| {
            let _ = reply.send(match failed {
                None => result.map(|applied| MembersChanged {
                    applied,
                    team: committed.get().cloned(),
                }),
                Some(cause) => Err(not_committed(cause)),
            });
        })
    }

    /// The users it names.
    fn named(&self) -> impl Iterator<Item = &Uuid> {
        self.add.iter().chain(&self.remove)
    }

    /// Whether `other` may be applied as one change with this one: the same team, the
    /// same actor and the same rules (the policies were taken at different instants).
    fn merges_with(&self, other: &MemberChange) -> bool {
        self.team == other.team
            && self.actor == other.actor
            && self.policy.same_rules_as(&other.policy)
    }
}

/// The desired state of a member change of `team` as it is now: its name and external
/// id as they are (what rendering the group, applying no other operation and parsing it
/// back gives), and the members added and removed.
fn member_delta(actor: &Actor, team: &Team, add: &[Uuid], remove: &[Uuid]) -> Desired {
    let refs = |ids: &[Uuid]| ids.iter().copied().map(MemberRef::UserId).collect();
    let mut desired = Desired::new(actor.scim_source(), Scope::Listed);
    desired.teams.push(DesiredTeam {
        id: Some(team.id),
        intent: Intent::Update,
        external_id: team.external_id.clone(),
        display_name: team.display_name.clone(),
        metadata: None,
        members: MemberSpec::Delta {
            add: refs(add),
            remove: refs(remove),
        },
    });
    desired
}

impl Job for MemberChange {
    fn run<'t>(
        self: Box<Self>,
        tx: &'t mut WriteTx,
        _: &'t Policy,
    ) -> BoxFuture<'t, (Option<Savepoint>, Outcome)> {
        Box::pin(async move {
            let (savepoint, result) = change_in_savepoint(
                tx,
                SAVEPOINT,
                self.team,
                &self.expect,
                &self.policy,
                &self.actor,
                |current| {
                    Ok::<_, EngineError>(member_delta(
                        &self.actor,
                        current,
                        &self.add,
                        &self.remove,
                    ))
                },
            )
            .await;
            (savepoint, Outcome::settled(result, |r| self.answer(r)))
        })
    }

    fn is_create(&self) -> bool {
        false
    }

    fn fail(self: Box<Self>, cause: &StoreError) {
        let _ = self.reply.send(Err(not_committed(cause)));
    }
}

/// Splits a run of consecutive member changes into groups, in the order they are to be
/// applied, such that applying each group as one change does what applying the run one
/// change at a time would do.
///
/// The run is cut into segments where no user is named twice: within a segment every
/// user's memberships come from one change, so the order of its changes cannot matter
/// (a user's role, from the role groups they are in, included), and the changes of one
/// team that merge (same actor and rules) become one group. Beyond that a change with
/// an If-Match runs alone and in its place, since the version it names depends on
/// every change of its team before it.
fn merge_groups(run: Vec<MemberChange>) -> Vec<Vec<MemberChange>> {
    let mut groups: Vec<Vec<MemberChange>> = Vec::new();
    // Where the current segment's groups start, and the users it names.
    let mut segment = 0;
    let mut named: HashSet<Uuid> = HashSet::new();
    for change in run {
        let alone = !matches!(change.expect, Expect::AnyVersion);
        let clash = change.named().any(|user| named.contains(user));
        if alone || clash {
            segment = groups.len();
            named.clear();
        }
        named.extend(change.named().copied());
        if alone {
            groups.push(vec![change]);
            segment = groups.len();
            named.clear();
            continue;
        }
        match groups[segment..]
            .iter_mut()
            .find(|group| group[0].merges_with(&change))
        {
            Some(group) => group.push(change),
            None => groups.push(vec![change]),
        }
    }
    groups
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
    mut jobs: mpsc::Receiver<Queued>,
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
        let started = std::time::Instant::now();
        let committed = apply_batch(tx, &policy, std::mem::take(&mut batch)).await;
        crate::metrics::write_batch_duration(started.elapsed().as_secs_f64());
        if let Some(done) = committed {
            counts.transactions.fetch_add(1, Ordering::Relaxed);
            let writes = done.creates + done.changes;
            counts.writes.fetch_add(writes as u64, Ordering::Relaxed);
            counts
                .merged
                .fetch_add(done.merged as u64, Ordering::Relaxed);
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
    /// Of those, applied as part of a merged change.
    merged: usize,
}

/// Applies `jobs` in `tx` and answers each once the commit is known; what it applied
/// when it committed.
async fn apply_batch(
    tx: Result<WriteTx, StoreError>,
    policy: &Policy,
    jobs: Vec<Queued>,
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
    // The teams member changes touched, read back once before the COMMIT.
    let mut teams: HashMap<Uuid, TeamSlot> = HashMap::new();
    let mut jobs = jobs.into_iter().peekable();
    while let Some(job) = jobs.next() {
        let broken = match job {
            Queued::Job(job) => run_one(&mut tx, policy, job, &mut answers, &mut done)
                .await
                .map_err(|e| (e, Vec::new())),
            Queued::Create(first) => {
                let mut run = vec![first];
                while let Some(Queued::Create(_)) = jobs.peek() {
                    if let Some(Queued::Create(next)) = jobs.next() {
                        run.push(next);
                    }
                }
                apply_creates(&mut tx, policy, run, &mut answers, &mut done).await
            }
            Queued::Members(first) => {
                let mut run = vec![first];
                while let Some(Queued::Members(_)) = jobs.peek() {
                    if let Some(Queued::Members(next)) = jobs.next() {
                        run.push(next);
                    }
                }
                apply_member_changes(&mut tx, policy, run, &mut answers, &mut done, &mut teams)
                    .await
            }
        };
        if let Err((e, unrun)) = broken {
            let waiting = unrun.into_iter().chain(jobs);
            fail_all(answers, waiting, &e);
            return None;
        }
    }
    read_back_teams(&mut tx, teams).await;
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

/// Reads the teams of the batch's member changes as they will commit, in one query,
/// for their answers. A failed read only costs those answers a read of their own.
async fn read_back_teams(tx: &mut WriteTx, teams: HashMap<Uuid, TeamSlot>) {
    if teams.is_empty() {
        return;
    }
    let ids: Vec<String> = teams.keys().map(Uuid::to_string).collect();
    match tx.teams_where(TeamKey::Id, &ids).await {
        Ok(read) => {
            for team in read {
                if let Some(slot) = teams.get(&team.id) {
                    let _ = slot.set(team);
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "could not read back the teams of a batch"),
    }
}

/// Why a batch cannot go on, and the writes of the current step that did not run.
type Broken = (StoreError, Vec<Queued>);

/// Runs one write in `tx`, undoing it to its savepoint if it is refused.
async fn run_one(
    tx: &mut WriteTx,
    policy: &Policy,
    job: Box<dyn Job>,
    answers: &mut Vec<Answer>,
    done: &mut Committed,
) -> Result<(), StoreError> {
    let create = job.is_create();
    let (savepoint, outcome) = job.run(tx, policy).await;
    match outcome {
        Outcome::Applied(answer) => {
            match create {
                true => done.creates += 1,
                false => done.changes += 1,
            }
            answers.push(answer);
            Ok(())
        }
        Outcome::Refused(answer) => {
            answers.push(answer);
            match savepoint {
                Some(savepoint) => tx.rollback_to(savepoint).await,
                None => Ok(()),
            }
        }
        Outcome::Broken(e, answer) => {
            // The write that broke the transaction is told its own error.
            answer(None);
            Err(e)
        }
    }
}

/// Applies a run of consecutive member changes, merged where [`merge_groups`] allows.
async fn apply_member_changes(
    tx: &mut WriteTx,
    policy: &Policy,
    mut run: Vec<MemberChange>,
    answers: &mut Vec<Answer>,
    done: &mut Committed,
    committed: &mut HashMap<Uuid, TeamSlot>,
) -> Result<(), Broken> {
    for change in &mut run {
        change.committed = committed.entry(change.team).or_default().clone();
    }
    apply_groups(tx, policy, merge_groups(run), answers, done).await
}

/// Applies a run of consecutive creates: those of one actor in a row as one change.
/// A userName taken, by the store or by another create of the run, refuses the merged
/// change, and its creates are then applied one by one.
async fn apply_creates(
    tx: &mut WriteTx,
    policy: &Policy,
    run: Vec<Create>,
    answers: &mut Vec<Answer>,
    done: &mut Committed,
) -> Result<(), Broken> {
    let mut groups: Vec<Vec<Create>> = Vec::new();
    for create in run {
        match groups.last_mut() {
            Some(group)
                if group[0].actor == create.actor
                    && group[0].desired.source == create.desired.source =>
            {
                group.push(create)
            }
            _ => groups.push(vec![create]),
        }
    }
    apply_groups(tx, policy, groups, answers, done).await
}

/// Writes of one kind that a batch may apply as one change.
trait Mergeable: Job + Sized + 'static {
    /// Back into the queue's type, to be failed with its batch.
    fn queued(self) -> Queued;
    /// The users it is about: its part of a merged change.
    fn users(&self) -> Vec<Uuid>;
    /// Applies `group` as one change in `tx`, returning the savepoint it took first.
    fn apply_together<'t>(
        tx: &'t mut WriteTx,
        policy: &'t Policy,
        group: &'t [Self],
    ) -> BoxFuture<'t, (Option<Savepoint>, Applied)>;
    /// The answer to give once the commit is known.
    fn answer_with(self, result: Applied) -> Answer;
}

/// Applies `groups` in order: a group of one alone, a larger one as one change, which
/// when refused is undone to its savepoint and applied one write at a time, so that
/// each write is judged exactly as it would have been alone.
async fn apply_groups<W: Mergeable>(
    tx: &mut WriteTx,
    policy: &Policy,
    groups: Vec<Vec<W>>,
    answers: &mut Vec<Answer>,
    done: &mut Committed,
) -> Result<(), Broken> {
    let mut groups = groups.into_iter();
    while let Some(group) = groups.next() {
        let applied = match group.len() {
            1 => one_by_one(tx, policy, group, answers, done).await,
            _ => apply_merged(tx, policy, group, answers, done).await,
        };
        if let Err((e, unrun)) = applied {
            let waiting = unrun.into_iter().chain(groups.flatten());
            return Err((e, waiting.map(W::queued).collect()));
        }
    }
    Ok(())
}

async fn apply_merged<W: Mergeable>(
    tx: &mut WriteTx,
    policy: &Policy,
    group: Vec<W>,
    answers: &mut Vec<Answer>,
    done: &mut Committed,
) -> Result<(), (StoreError, Vec<W>)> {
    let (savepoint, merged) = W::apply_together(tx, policy, &group).await;
    match merged {
        Ok(applied) => {
            match group[0].is_create() {
                true => done.creates += group.len(),
                false => done.changes += group.len(),
            }
            done.merged += group.len();
            for write in group {
                let part = part_of(&applied, &write.users());
                answers.push(write.answer_with(Ok(part)));
            }
            return Ok(());
        }
        Err(refused) => tracing::debug!(
            error = %refused,
            size = group.len(),
            "a merged change was refused; applying its writes one by one"
        ),
    }
    if let Some(savepoint) = savepoint {
        if let Err(e) = tx.rollback_to(savepoint).await {
            return Err((e, group));
        }
    }
    one_by_one(tx, policy, group, answers, done).await
}

/// Runs `writes` one after the other; on a broken batch, the error and those not run.
async fn one_by_one<W: Mergeable>(
    tx: &mut WriteTx,
    policy: &Policy,
    writes: Vec<W>,
    answers: &mut Vec<Answer>,
    done: &mut Committed,
) -> Result<(), (StoreError, Vec<W>)> {
    let mut writes = writes.into_iter();
    while let Some(write) = writes.next() {
        if let Err(e) = run_one(tx, policy, Box::new(write), answers, done).await {
            return Err((e, writes.collect()));
        }
    }
    Ok(())
}

impl Mergeable for MemberChange {
    fn queued(self) -> Queued {
        Queued::Members(self)
    }

    fn users(&self) -> Vec<Uuid> {
        self.named().copied().collect()
    }

    fn apply_together<'t>(
        tx: &'t mut WriteTx,
        _: &'t Policy,
        group: &'t [Self],
    ) -> BoxFuture<'t, (Option<Savepoint>, Applied)> {
        Box::pin(async move {
            let first = &group[0];
            let add: Vec<Uuid> = group.iter().flat_map(|c| c.add.iter().copied()).collect();
            let remove: Vec<Uuid> = group
                .iter()
                .flat_map(|c| c.remove.iter().copied())
                .collect();
            change_in_savepoint(
                tx,
                SAVEPOINT,
                first.team,
                &Expect::AnyVersion,
                &first.policy,
                &first.actor,
                |current| Ok(member_delta(&first.actor, current, &add, &remove)),
            )
            .await
        })
    }

    fn answer_with(self, result: Applied) -> Answer {
        self.answer(result)
    }
}

impl Mergeable for Create {
    fn queued(self) -> Queued {
        Queued::Create(self)
    }

    fn users(&self) -> Vec<Uuid> {
        self.desired.users.iter().filter_map(|u| u.id).collect()
    }

    fn apply_together<'t>(
        tx: &'t mut WriteTx,
        policy: &'t Policy,
        group: &'t [Self],
    ) -> BoxFuture<'t, (Option<Savepoint>, Applied)> {
        Box::pin(async move {
            let savepoint = match tx.savepoint(SAVEPOINT).await {
                Ok(savepoint) => savepoint,
                Err(e) => return (None, Err(EngineError::Store(e))),
            };
            let first = &group[0];
            let mut merged = Desired::new(first.desired.source.clone(), first.desired.scope);
            merged.users = group
                .iter()
                .flat_map(|c| c.desired.users.iter().cloned())
                .collect();
            let result = apply_in(tx, Request::new(&merged, policy, &first.actor)).await;
            (Some(savepoint), result)
        })
    }

    fn answer_with(self, result: Applied) -> Answer {
        answer(self.reply, result)
    }
}

/// What a merged change did for one of the writes in it: the operations on `users`
/// (and their names); the time it was applied at is the merged change's.
fn part_of(applied: &Done, users: &[Uuid]) -> Done {
    let whole = &applied.plan;
    let ops: Vec<Op> = whole
        .ops
        .iter()
        .filter(|op| op.user_id().is_some_and(|id| users.contains(&id)))
        .cloned()
        .collect();
    let plan = Plan {
        format_version: whole.format_version.clone(),
        source: whole.source.clone(),
        scope: whole.scope,
        fingerprint: None,
        user_names: whole
            .user_names
            .iter()
            .filter(|(id, _)| users.contains(id))
            .map(|(id, name)| (*id, name.clone()))
            .collect(),
        team_names: whole.team_names.clone(),
        warnings: whole.warnings.clone(),
        team_deletions: whole.team_deletions,
        guard: whole.guard.clone(),
        ops,
    };
    let summary = ApplySummary {
        applied: plan.ops.len(),
        unchanged: 0,
        ..applied.summary.clone()
    };
    Done { plan, summary }
}

/// Answers every write of a failed batch: those that ran and those still waiting.
/// (The transaction is rolled back when the caller drops it.)
fn fail_all(answers: Vec<Answer>, waiting: impl IntoIterator<Item = Queued>, cause: &StoreError) {
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
    fn jobs(names: &[&str]) -> (Vec<Queued>, Vec<oneshot::Receiver<Applied>>) {
        names
            .iter()
            .map(|name| {
                let (reply, answer) = oneshot::channel();
                let job = Queued::Create(Create {
                    desired: create(name),
                    actor: actor(),
                    reply,
                });
                (job, answer)
            })
            .unzip()
    }

    /// Applies `jobs` in a transaction of their own, as the batching task does.
    async fn batch(store: &Store, jobs: Vec<Queued>) -> Option<Committed> {
        apply_batch(store.begin_write().await, &Policy::default(), jobs).await
    }

    /// `n` creates committed, `merged` of them as one change.
    fn creates(n: usize, merged: usize) -> Option<Committed> {
        Some(Committed {
            creates: n,
            changes: 0,
            merged,
        })
    }

    async fn exists(store: &Store, name: &str) -> bool {
        let name = UserName::parse(name).expect("name");
        store.user_by_name(&name).await.expect("read").is_some()
    }

    /// A member change of `team` by `actor`, adding `add` and removing `remove`.
    fn members(team: u128, add: &[u128], remove: &[u128], actor: &str) -> MemberChange {
        let ids = |n: &[u128]| n.iter().map(|&n| Uuid::from_u128(n)).collect();
        MemberChange {
            team: Uuid::from_u128(team),
            add: ids(add),
            remove: ids(remove),
            expect: Expect::AnyVersion,
            policy: Policy::default(),
            actor: Actor::new(crate::domain::Trigger::Scim, actor),
            reply: oneshot::channel().0,
            committed: TeamSlot::default(),
        }
    }

    /// The groups as (team, the users each change adds), for comparing.
    fn shape(groups: Vec<Vec<MemberChange>>) -> Vec<(u128, Vec<Vec<u128>>)> {
        groups
            .into_iter()
            .map(|group| {
                let team = group[0].team.as_u128();
                let adds = group
                    .iter()
                    .map(|c| c.named().map(|u| u.as_u128()).collect())
                    .collect();
                (team, adds)
            })
            .collect()
    }

    #[test]
    fn member_changes_of_one_team_naming_different_users_merge_into_one_group() {
        let run = vec![
            members(1, &[10], &[], "okta"),
            members(1, &[11], &[], "okta"),
            members(1, &[], &[12], "okta"),
        ];
        assert_eq!(
            shape(merge_groups(run)),
            vec![(1, vec![vec![10], vec![11], vec![12]])]
        );
    }

    #[test]
    fn member_changes_of_different_teams_merge_per_team_keeping_their_first_place() {
        let run = vec![
            members(1, &[10], &[], "okta"),
            members(2, &[11], &[], "okta"),
            members(1, &[12], &[], "okta"),
        ];
        assert_eq!(
            shape(merge_groups(run)),
            vec![(1, vec![vec![10], vec![12]]), (2, vec![vec![11]])]
        );
    }

    #[test]
    fn a_user_named_again_starts_a_new_segment_so_the_later_change_comes_after() {
        // 10 is added to team 1, then removed from it, then 11 joins team 2: merging the
        // removal with the add would lose the order; 11's change may join neither
        // earlier group, since its segment starts after the removal.
        let run = vec![
            members(1, &[10], &[], "okta"),
            members(2, &[13], &[], "okta"),
            members(1, &[], &[10], "okta"),
            members(2, &[11], &[], "okta"),
        ];
        assert_eq!(
            shape(merge_groups(run)),
            vec![
                (1, vec![vec![10]]),
                (2, vec![vec![13]]),
                (1, vec![vec![10]]),
                (2, vec![vec![11]]),
            ]
        );
    }

    #[test]
    fn a_user_in_two_teams_of_one_run_keeps_the_order_of_its_changes() {
        // Role groups make a user's memberships of different teams depend on each
        // other, so a user named for another team also cuts the segment.
        let run = vec![
            members(1, &[10], &[], "okta"),
            members(2, &[10], &[], "okta"),
            members(1, &[11], &[], "okta"),
        ];
        assert_eq!(
            shape(merge_groups(run)),
            vec![
                (1, vec![vec![10]]),
                (2, vec![vec![10]]),
                (1, vec![vec![11]])
            ]
        );
    }

    #[test]
    fn a_member_change_with_if_match_runs_alone_and_in_its_place() {
        let mut guarded = members(1, &[11], &[], "okta");
        guarded.expect = Expect::OneOf(vec![3]);
        let run = vec![
            members(1, &[10], &[], "okta"),
            guarded,
            members(1, &[12], &[], "okta"),
            members(1, &[13], &[], "okta"),
        ];
        assert_eq!(
            shape(merge_groups(run)),
            vec![
                (1, vec![vec![10]]),
                (1, vec![vec![11]]),
                (1, vec![vec![12], vec![13]]),
            ]
        );
    }

    #[test]
    fn member_changes_from_different_actors_or_rules_do_not_merge() {
        let mut stricter = members(1, &[12], &[], "okta");
        stricter.policy.max_membership_removals = 1;
        let mut later = members(1, &[13], &[], "okta");
        later.policy.now += chrono::Duration::seconds(5);
        let run = vec![
            members(1, &[10], &[], "okta"),
            members(1, &[11], &[], "entra"),
            stricter,
            later,
        ];
        assert_eq!(
            shape(merge_groups(run)),
            vec![
                (1, vec![vec![10], vec![13]]),
                (1, vec![vec![11]]),
                (1, vec![vec![12]]),
            ],
            "the clock the rules were taken at is not a difference"
        );
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
    async fn creates_of_one_actor_in_a_batch_are_applied_as_one_change_each_told_its_own_user() {
        let (_dir, store) = store().await;
        let names = ["one@example.com", "two@example.com", "three@example.com"];
        let (jobs_of_batch, answers) = jobs(&names);
        assert_eq!(batch(&store, jobs_of_batch).await, creates(3, 3));
        for (name, answer) in names.iter().zip(answers) {
            let done = answer.await.expect("answered").expect("created");
            let created: Vec<&str> = done
                .plan
                .ops
                .iter()
                .filter_map(|op| match op {
                    Op::CreateUser(new) => Some(new.user_name.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(created, [*name], "each create is told about its own user");
            assert_eq!(done.summary.applied, 1);
            assert!(exists(&store, name).await, "{name}");
        }
        let audited = store.audit_since(None).await.expect("audit").len();
        assert_eq!(audited, 3, "one audit row per user, as one at a time");
    }

    #[tokio::test]
    async fn two_creates_of_one_name_in_a_batch_end_as_one_at_a_time_would() {
        let (_dir, store) = store().await;
        let (jobs_of_batch, answers) = jobs(&["same@example.com", "SAME@example.com"]);
        assert_eq!(batch(&store, jobs_of_batch).await, creates(1, 0));
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(
                answer
                    .await
                    .expect("answered")
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        }
        assert_eq!(outcomes[0], Ok(()));
        let refused = outcomes[1].clone().expect_err("the second is refused");
        assert!(refused.contains("already taken"), "{refused}");
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
        assert_eq!(batch(&store, jobs_of_batch).await, creates(2, 0));
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
        assert_eq!(batch(&store, next).await, creates(1, 0));
        assert!(exists(&store, "next@example.com").await);
    }
}
