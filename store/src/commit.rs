//! Group commit: one writer thread takes jobs (updates and audit events)
//! from a bounded channel, writes everything that queued up meanwhile as
//! one synced batch, and then answers each job. Under concurrency one
//! fsync serves many requests; a full queue is refused at once so callers
//! can shed load instead of queueing without bound.
//!
//! Stale-version checks happen inside `Store::commit`, on this one thread,
//! so concurrent updates of one key cannot race.
//!
//! A job of more updates than one slice ([`SLICE_UPDATES`], [`SLICE_BYTES`])
//! — a provider's submission of a whole file — is set aside and written a
//! slice per group, the jobs that queued during a slice's write going
//! first in a group of their own, and answered once its last slice is
//! durable: a verification that arrives while a million-line submission is
//! being written waits for one slice, not for the whole file. Its audit
//! entries and extra writes go with the first slice, except the key
//! mappings sealed beforehand, which go with the slice of their update. If
//! a slice fails, the job is answered with that error and the slices
//! before it stay written (its updates are versioned, so sending it again
//! is harmless).
//!
//! Batch work ([`Committer::submit_waiting`], [`Committer::submit_uses_waiting`]:
//! a comparison job's chunks and its progress; a synchronous batch's
//! chunks take the journal instead where there is one) is set aside the same way, whole, and goes in a
//! group up to [`BULK_GROUP_EVENTS`] at a time, taking turns with the
//! slices: a verification queued behind a batch's chunks waits for two of
//! them at most, not for every chunk the batch has in flight. Batch work
//! keeps its order: whatever its size, a chunk never overtakes an earlier
//! one (a job's progress record and the prefix of durable chunks after a
//! crash depend on it).
//!
//! Async callers use [`Committer::commit`], which waits for the job's group
//! to be durable without holding a thread; [`Committer::watch_seq`] follows
//! the last committed change-log sequence number (change-feed long polls).
//!
//! Uses that change nothing but the audit trail need not wait for the
//! writer where the engine keeps a journal ([`Committer::append_uses`],
//! which a batch's chunks take): the caller appends them, sealed, as one
//! journal record and waits only until the journal has it on disk
//! (one `fdatasync` for every record waiting, shared with the writer's own
//! by the journal's group commit). The record is queued in journal order
//! ([`crate::audit::uses::Pending`]); the writer enters the queued records
//! into the chain and indexes, together with the journal position they
//! reach (`meta/uses_indexed`), once the oldest is
//! [`crate::audit::uses::ENTER_AFTER`] old, enough gathered, an auditor
//! waits, or with any group it writes anyway; a reopen enters whatever
//! the trail lacked from the journal. Auditors' reads first wait
//! for the trail to hold every use recorded before them.

use crate::audit::uses::{Uses, MAX_PENDING_EVENTS};
use crate::audit::AuditEvent;
use crate::engine::{BatchOp, Cf, Durability, WriteBatch};
use crate::store::{Outcome, Store, Update};
use crate::Error;
use crate::value::Value;
use crossbeam::channel::{bounded, Receiver, Sender, TrySendError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The result handed back to one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobDone {
    pub outcomes: Vec<Outcome>,
    /// Sequence numbers of this job's audit entries start here.
    pub first_audit_seq: u64,
    pub last_seq: u64,
}

pub type JobResult = Result<JobDone, Arc<Error>>;
pub type Reply = Box<dyn FnOnce(JobResult) + Send>;

struct Job {
    updates: Vec<Update>,
    events: Vec<AuditEvent>,
    /// Uses in their compact form, chained before `events`.
    uses: Vec<Uses>,
    extra: WriteBatch,
    reply: Reply,
    /// Raised: the job is answered [`Error::Abandoned`] instead of written.
    guard: Option<Arc<AtomicBool>>,
    /// Batch work, set aside and written in order after the jobs queued
    /// meanwhile (see the module's doc).
    batch: bool,
    /// Records of uses durable in the journal already: a group of these
    /// alone need not be synced (a crash re-enters them from the journal).
    journaled: bool,
}

impl Job {
    /// Uses the job audits, in either form.
    fn audited(&self) -> usize {
        self.events.len() + self.uses.iter().map(Uses::len).sum::<usize>()
    }
}

/// Why an awaited commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The queue is full: shed load.
    #[error("the writer's queue is full")]
    Overloaded,
    /// The writer has stopped (shutdown or a fatal write error).
    #[error("the writer has stopped")]
    Closed,
    /// The group's write failed.
    #[error("{0}")]
    Failed(Arc<Error>),
}

impl From<CommitError> for crate::Failure {
    fn from(e: CommitError) -> crate::Failure {
        match e {
            CommitError::Overloaded => crate::Failure::Overloaded,
            CommitError::Closed => crate::Failure::Unavailable("the server is shutting down".into()),
            CommitError::Failed(e) => crate::Failure::from(&*e),
        }
    }
}

impl From<SubmitError> for CommitError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded => CommitError::Overloaded,
            SubmitError::Closed => CommitError::Closed,
        }
    }
}

/// Why a job was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: shed load.
    Overloaded,
    /// The writer has stopped (shutdown or a fatal write error).
    Closed,
}

/// A job [`Committer::submit_guarded`] did not queue, and why.
pub struct Refused {
    pub why: SubmitError,
    pub updates: Vec<Update>,
    pub events: Vec<AuditEvent>,
    pub extra: WriteBatch,
    pub reply: Reply,
}

impl Refused {
    fn of(why: SubmitError, j: Job) -> Refused {
        Refused { why, updates: j.updates, events: j.events, extra: j.extra, reply: j.reply }
    }
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refused").field("why", &self.why).field("updates", &self.updates.len()).finish()
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub groups: AtomicU64,
    pub jobs: AtomicU64,
    pub items: AtomicU64,
    pub largest_group: AtomicU64,
    /// The longest group commit (the synced write), in microseconds: every
    /// answer of its group waited that long.
    pub longest_commit_us: AtomicU64,
    /// Group commits that took longer than [`SLOW_COMMIT`].
    pub slow_commits: AtomicU64,
    /// Group commits that took longer than [`LONG_COMMIT`] (the slow ones
    /// included).
    pub long_commits: AtomicU64,
    pub queued: AtomicUsize,
    pub failures: AtomicU64,
    /// Jobs written in slices (see the module's doc), and the slices written.
    pub sliced_jobs: AtomicU64,
    pub slices: AtomicU64,
    /// Batch jobs set aside (see the module's doc).
    pub bulk_jobs: AtomicU64,
    /// Records of uses appended to the journal, the syncs made for them,
    /// the longest of those (from the first waiter's arrival to its answer,
    /// in microseconds) and those over [`SLOW_COMMIT`]: what a use's answer
    /// waits for instead of a group commit.
    pub use_records: AtomicU64,
    pub use_syncs: AtomicU64,
    pub longest_use_sync_us: AtomicU64,
    pub slow_use_syncs: AtomicU64,
    /// Records of uses entered into the audit trail by the writer.
    pub uses_entered: AtomicU64,
    /// Groups the writer paused before, to let more jobs join (see
    /// `Gather`).
    pub gather_pauses: AtomicU64,
}

pub struct Committer {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    store: Arc<Store>,
    /// Makes records of uses durable for their async callers; `None`
    /// where the engine keeps no journal.
    syncer: Option<Syncer>,
    stats: Arc<CommitStats>,
    /// The last committed change-log sequence number, raised by the writer
    /// after each group.
    seq: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").field("stats", &self.stats).finish()
    }
}

/// Items (updates plus events) at which a group stops growing, so one
/// group's latency stays bounded.
pub const MAX_GROUP_ITEMS: usize = 50_000;

/// Updates at which a group stops growing: about 60 ms of the writer's
/// time, the longest any job waits behind others' updates (many providers'
/// submissions of a thousand lines at once). Events are cheaper, and
/// bounded by [`MAX_GROUP_ITEMS`] only.
pub const MAX_GROUP_UPDATES: usize = 4 * SLICE_UPDATES;

/// Updates in one slice of a larger job: about 15 ms of the writer's time
/// for plain records, what another job may wait behind a large one.
pub const SLICE_UPDATES: usize = 1024;

/// Bytes of field values at which a slice ends early (records with
/// photos or scans): about the same bound in time for large records.
pub const SLICE_BYTES: usize = 4 << 20;

/// Large jobs set aside at most: past it the writer takes no more jobs
/// from the queue until one is done, so the queue's bound (and its
/// `503 overloaded`) holds for large jobs too, give or take these.
pub const MAX_SET_ASIDE: usize = 8;

/// The longest a busy writer waits for more jobs before writing a small
/// group, by default (see `Gather`).
pub const GATHER_PAUSE: std::time::Duration = std::time::Duration::from_micros(200);

/// Groups of at most this many jobs are small enough to wait for more.
const SMALL_GROUP: usize = 15;

/// The writer counts as busy when its last group ended less than this
/// before the next one was taken.
const BUSY_WITHIN: std::time::Duration = std::time::Duration::from_millis(1);

/// Whether the writer waits a moment for more jobs before it writes a
/// group (PostgreSQL's `commit_delay`). Every group costs the writer a
/// synced write whatever it holds — on a virtual disk two notifications
/// of the device and the wake-ups around them, tens of microseconds of
/// CPU. When requests keep the writer busy but arrive a few per group,
/// those costs are paid every few requests, and on a small machine they
/// take CPU the requests need: measured, a pause of 200 µs before small
/// groups cut the server's CPU per verification by 3–15 % at full rate
/// and 10–23 % at half of it and raised full-rate throughput, at about
/// 0.3 ms more p50 at moderate load (BENCHMARKS.md, "A pause before
/// small groups"). A group is
/// paused for only when the writer is busy (its last group ended under
/// [`BUSY_WITHIN`] before) and the group is small but not alone: a lone
/// job on an idle writer is written at once, and a large group already
/// shares its write. The pause is as long as a group of requests' jobs
/// has recently taken to commit (a moving average: the sync and the
/// writer's own work), at most the configured limit, so on a fast disk
/// it shrinks with the commits (the kernel's timer slack, some 50 µs,
/// comes on top of any pause).
#[derive(Debug)]
pub(crate) struct Gather {
    limit: std::time::Duration,
    /// Recent group commits' time, in microseconds (moving average).
    commit_us: f64,
    last_end: Option<std::time::Instant>,
}

impl Gather {
    pub(crate) fn new(limit: std::time::Duration) -> Gather {
        Gather { limit, commit_us: 0.0, last_end: None }
    }

    /// How long to wait for more jobs before writing a group of `jobs`
    /// jobs taken at `now`; `None` to write it at once. `closed`: no job
    /// may join it (it is full) or set-aside work waits.
    pub(crate) fn pause(&self, jobs: usize, closed: bool, now: std::time::Instant) -> Option<std::time::Duration> {
        let busy = self.last_end.is_some_and(|t| now.saturating_duration_since(t) < BUSY_WITHIN);
        if !busy || closed || !(2..=SMALL_GROUP).contains(&jobs) {
            return None;
        }
        let pause = self.limit.min(std::time::Duration::from_micros(self.commit_us as u64));
        (!pause.is_zero()).then_some(pause)
    }

    /// A group of requests' jobs was committed from `started` to `ended`
    /// (slices, batch work and the writer's own entering of uses are not
    /// counted: they neither make the writer busy with requests nor take
    /// the time a request's group does).
    pub(crate) fn committed(&mut self, started: std::time::Instant, ended: std::time::Instant) {
        let took = ended.saturating_duration_since(started).as_micros() as f64;
        // A tenth of each new commit: a single slow sync (a flush's
        // writeback) moves the pause little.
        self.commit_us = if self.last_end.is_none() { took } else { self.commit_us * 0.9 + took * 0.1 };
        self.last_end = Some(ended);
    }
}

/// Events of set-aside batch jobs written in one group: two chunks of
/// 2,048 lines, about 7 ms of the writer's time, what a job queued behind
/// a running batch waits for. At least one job goes, whatever its size.
pub const BULK_GROUP_EVENTS: usize = 4096;

/// Batch jobs set aside at most: the chunks three batches keep in flight
/// (about ten each). Past it the writer leaves the queue alone until one
/// is written, as for [`MAX_SET_ASIDE`].
pub const MAX_BULK_SET_ASIDE: usize = 32;

impl Committer {
    /// Starts the writer thread; `queue` bounds the number of waiting jobs.
    pub fn start(store: Arc<Store>, queue: usize) -> Committer {
        Committer::start_with(store, queue, GATHER_PAUSE)
    }

    /// [`Committer::start`] with the longest pause for more jobs before a
    /// small group (see `Gather`); zero never pauses.
    pub fn start_with(store: Arc<Store>, queue: usize, gather_pause: std::time::Duration) -> Committer {
        let (tx, rx) = bounded::<Job>(queue.max(1));
        let stats = Arc::new(CommitStats::default());
        let seq = Arc::new(tokio::sync::watch::channel(store.last_seq()).0);
        let (st, sq, ws) = (stats.clone(), seq.clone(), store.clone());
        let thread = std::thread::Builder::new()
            .name("basedata-writer".into())
            .spawn(move || writer_loop(ws, rx, st, sq, Gather::new(gather_pause)))
            .expect("spawn writer thread");
        let syncer = Syncer::start(store.clone(), stats.clone());
        Committer { tx: Some(tx), thread: Some(thread), store, syncer, stats, seq }
    }

    /// Whether uses go to the journal ([`Committer::append_uses`]).
    pub fn journals_uses(&self) -> bool {
        self.syncer.is_some()
    }

    /// Appends uses to the journal as one record, in call order; the
    /// receiver answers once it is durable. Waits while the writer has
    /// [`MAX_PENDING_EVENTS`] events or more yet to enter. Only where
    /// [`Committer::journals_uses`].
    pub async fn append_uses(&self, uses: Uses) -> Result<tokio::sync::oneshot::Receiver<JobResult>, CommitError> {
        let (Some(syncer), Some(log), Some(_)) = (self.syncer.as_ref(), self.store.engine().use_log(), self.tx.as_ref()) else {
            return Err(CommitError::Closed);
        };
        let pending = self.store.pending_uses();
        if pending.events() >= MAX_PENDING_EVENTS {
            let mut entered = pending.watch_entered();
            while pending.events() >= MAX_PENDING_EVENTS {
                if pending.closed() || entered.changed().await.is_err() {
                    return Err(CommitError::Closed);
                }
            }
        }
        let payload = self.store.seal_uses(&uses).map_err(|e| CommitError::Failed(Arc::new(e)))?;
        let mut uses = Some(uses);
        let gate = pending.appending().await;
        let lsn = log
            .append_uses(&payload, &mut |_| pending.push(uses.take().unwrap_or_default()))
            .map_err(|e| CommitError::Failed(Arc::new(e)))?;
        drop(gate);
        self.stats.use_records.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        syncer.wait(lsn, Box::new(move |r: JobResult| {
            let _ = tx.send(r);
        }));
        Ok(rx)
    }

    /// Waits until every use recorded before the call is in the audit
    /// trail (auditors' reads; the caller bounds the wait): whether it is,
    /// `false` when the writer stopped.
    pub async fn settle_uses(&self) -> bool {
        let pending = self.store.pending_uses();
        let target = pending.queued();
        if target == 0 {
            return true;
        }
        pending.hurry();
        let mut entered = pending.watch_entered();
        loop {
            if *entered.borrow_and_update() >= target {
                break;
            }
            if pending.closed() || entered.changed().await.is_err() {
                return false;
            }
        }
        // The writer enters uses with an unsynced write (the journal holds
        // the uses themselves): synced before an auditor reads the entries,
        // or a crash could enter them again under other numbers and times
        // than the ones shown.
        let store = self.store.clone();
        matches!(tokio::task::spawn_blocking(move || store.engine().write(WriteBatch::new(), Durability::Sync)).await, Ok(Ok(())))
    }

    pub fn stats(&self) -> &Arc<CommitStats> {
        &self.stats
    }

    /// Follows the last committed change-log sequence number.
    pub fn watch_seq(&self) -> tokio::sync::watch::Receiver<u64> {
        self.seq.subscribe()
    }

    /// Queues a job and waits until its group is durable: the answer to a
    /// request that reads or changes data is sent only after this returns.
    /// Refused at once when the queue is full.
    pub async fn commit(&self, updates: Vec<Update>, events: Vec<AuditEvent>, extra: WriteBatch) -> Result<JobDone, CommitError> {
        self.commit_then(updates, events, extra, || ()).await
    }

    /// [`Committer::commit`], and `after` runs on the writer thread once
    /// the job is durable, before the caller hears of it — whether or not
    /// the caller still waits. What must follow a commit (a cache taking
    /// in what was written, a lock held until it lands) goes in `after`,
    /// so that a request given up half-way (its client gone, its time
    /// limit passed) cannot leave memory out of step with the store. What
    /// `after` holds is dropped when it has run, or unrun when the job
    /// fails or is not queued.
    pub async fn commit_then<A: FnOnce() + Send + 'static>(
        &self,
        updates: Vec<Update>,
        events: Vec<AuditEvent>,
        extra: WriteBatch,
        after: A,
    ) -> Result<JobDone, CommitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit_with(updates, events, extra, Box::new(move |r: JobResult| {
            if r.is_ok() {
                after();
            }
            let _ = tx.send(r);
        }))?;
        match rx.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(CommitError::Failed(e)),
            Err(_) => Err(CommitError::Closed),
        }
    }

    /// Queues a job; `reply` runs on the writer thread once the job's group
    /// is durable (or failed). Never blocks.
    pub fn submit(&self, updates: Vec<Update>, events: Vec<AuditEvent>, reply: Reply) -> Result<(), SubmitError> {
        self.submit_with(updates, events, WriteBatch::new(), reply)
    }

    /// [`Committer::submit`] with extra writes committed in the same batch.
    pub fn submit_with(
        &self,
        updates: Vec<Update>,
        events: Vec<AuditEvent>,
        extra: WriteBatch,
        reply: Reply,
    ) -> Result<(), SubmitError> {
        self.submit_guarded(updates, events, extra, reply, None).map_err(|r| r.why)
    }

    /// [`Committer::submit_with`] for a chain of jobs that must be written
    /// in order or not at all: once `guard` is raised (by the reply of a
    /// job whose write failed, which runs before the writer takes its next
    /// group), every job of the chain still queued is answered
    /// [`Error::Abandoned`] unwritten, so no later link is durable without
    /// the one before it. A job the queue does not take comes back whole,
    /// to be offered again without being rebuilt.
    pub fn submit_guarded(
        &self,
        updates: Vec<Update>,
        events: Vec<AuditEvent>,
        extra: WriteBatch,
        reply: Reply,
        guard: Option<Arc<AtomicBool>>,
    ) -> Result<(), Refused> {
        let job = Job { updates, events, uses: Vec::new(), extra, reply, guard, batch: false, journaled: false };
        let Some(tx) = self.tx.as_ref() else { return Err(Refused::of(SubmitError::Closed, job)) };
        // Counted before the writer can take it (and count it out).
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let sent = tx.try_send(job);
        if sent.is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => Err(Refused::of(SubmitError::Overloaded, job)),
            Err(TrySendError::Disconnected(job)) => Err(Refused::of(SubmitError::Closed, job)),
        }
    }

    /// [`Committer::submit_with`] that waits up to `patience` for room in a
    /// full queue instead of refusing at once: for batch work, which would
    /// rather slow down than fail half-way through millions of lines. The
    /// job is batch work (see the module's doc): written after the jobs
    /// queued meanwhile, in order with the caller's other batch jobs.
    /// Blocks the calling thread while it waits.
    pub fn submit_waiting(
        &self,
        updates: Vec<Update>,
        events: Vec<AuditEvent>,
        extra: WriteBatch,
        reply: Reply,
        patience: std::time::Duration,
    ) -> Result<(), SubmitError> {
        self.send_waiting(Job { updates, events, uses: Vec::new(), extra, reply, guard: None, batch: true, journaled: false }, patience)
    }

    /// [`Committer::submit_waiting`] for uses in their compact form and
    /// writes of the caller's (a comparison job's chunk and its progress).
    pub fn submit_uses_waiting(&self, uses: Uses, extra: WriteBatch, reply: Reply, patience: std::time::Duration) -> Result<(), SubmitError> {
        let job = Job { updates: Vec::new(), events: Vec::new(), uses: vec![uses], extra, reply, guard: None, batch: true, journaled: false };
        self.send_waiting(job, patience)
    }

    fn send_waiting(&self, job: Job, patience: std::time::Duration) -> Result<(), SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Closed)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let sent = tx.send_timeout(job, patience);
        if sent.is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(crossbeam::channel::SendTimeoutError::Timeout(_)) => Err(SubmitError::Overloaded),
            Err(crossbeam::channel::SendTimeoutError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Stops accepting jobs, finishes the queued ones (and enters the
    /// uses recorded so far) and joins the threads.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.syncer.as_mut() {
            s.stop();
        }
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Makes records of uses durable for async callers: a thread that syncs
/// the journal through the highest record waited for, once for all of
/// them (the journal's group commit shares that sync with the writer's
/// own), and answers them. Callers never block a runtime thread on it.
struct Syncer {
    state: Arc<(Mutex<SyncState>, std::sync::Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct SyncState {
    waiting: Vec<(u64, Reply)>,
    /// When the first of `waiting` arrived.
    since: Option<std::time::Instant>,
    stop: bool,
}

impl Syncer {
    /// The syncer of `store`'s journal; none where the engine keeps none.
    fn start(store: Arc<Store>, stats: Arc<CommitStats>) -> Option<Syncer> {
        store.engine().use_log()?;
        let state: Arc<(Mutex<SyncState>, std::sync::Condvar)> = Arc::default();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("basedata-syncer".into())
            .spawn(move || {
                let Some(log) = store.engine().use_log() else { return };
                let (lock, cv) = &*shared;
                loop {
                    let (waiting, since) = {
                        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while st.waiting.is_empty() && !st.stop {
                            st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                        if st.waiting.is_empty() {
                            return;
                        }
                        (std::mem::take(&mut st.waiting), st.since.take())
                    };
                    let upto = waiting.iter().map(|(lsn, _)| *lsn).max().unwrap_or(0);
                    let synced = log.sync_to(upto).map_err(Arc::new);
                    for (_, reply) in waiting {
                        let r = synced.clone().map(|()| JobDone { outcomes: Vec::new(), first_audit_seq: 0, last_seq: store.last_seq() });
                        answer(reply, r);
                    }
                    let took = since.map_or(0, |t| t.elapsed().as_micros() as u64);
                    stats.use_syncs.fetch_add(1, Ordering::Relaxed);
                    stats.longest_use_sync_us.fetch_max(took, Ordering::Relaxed);
                    if took > SLOW_COMMIT.as_micros() as u64 {
                        stats.slow_use_syncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .expect("spawn syncer thread");
        Some(Syncer { state, thread: Some(thread) })
    }

    /// Answers `reply` once journal record `lsn` is durable.
    fn wait(&self, lsn: u64, reply: Reply) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        st.since.get_or_insert_with(std::time::Instant::now);
        st.waiting.push((lsn, reply));
        drop(st);
        cv.notify_one();
    }

    /// Answers those waiting, then stops the thread.
    fn stop(&mut self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A job of the writer's own: the records of uses queued so far, entered
/// into the audit trail with the journal position they reach. Taken with
/// no record appended meanwhile, so every record of uses up to that
/// position is among them or entered before.
fn uses_job(store: &Arc<Store>, stats: &Arc<CommitStats>) -> Option<Job> {
    let log = store.engine().use_log()?;
    let mut taken = None;
    log.with_last(&mut |last| {
        let uses = store.pending_uses().take_all();
        if !uses.is_empty() {
            taken = Some((uses, last));
        }
    });
    let (uses, through) = taken?;
    let records = uses.len() as u64;
    let (s, st) = (store.clone(), stats.clone());
    Some(Job {
        updates: Vec::new(),
        events: Vec::new(),
        uses,
        extra: Store::uses_entered(through),
        reply: Box::new(move |r: JobResult| match r {
            Ok(_) => {
                st.uses_entered.fetch_add(records, Ordering::Relaxed);
                if let Some(log) = s.engine().use_log() {
                    log.indexed(records, through);
                }
                s.pending_uses().entered(records);
            }
            // Durable in the journal, and queued again (`commit_group`).
            Err(e) => tracing::error!(error = %e, records, "audited uses could not be entered into the audit trail; they are tried again, and a restart enters them from the journal"),
        }),
        guard: None,
        batch: false,
        journaled: true,
    })
}

/// Moves a watched sequence number up to `value`, never down, waking its
/// waiters only when it moved.
pub fn raise_to(tx: &tokio::sync::watch::Sender<u64>, value: u64) {
    tx.send_if_modified(|s| {
        let newer = value > *s;
        *s = (*s).max(value);
        newer
    });
}

/// A group commit slower than this is counted (`slow_commits`): a stall
/// of the disk or of the engine that every answer in the group waited out.
/// The journal's slow syncs are counted at the same bound, so that the
/// two counts side by side tell the disk's stalls from others.
pub const SLOW_COMMIT: std::time::Duration = crate::engine::SLOW_SYNC;

/// A group commit longer than this is counted too (`long_commits`): six
/// to ten times a synced write's usual p99 on a virtual disk, and long enough to
/// show in the answers' p99 at half load, where a few syncs of 3–13 ms
/// a second, each holding every request in flight, were the likeliest
/// part of the tail that `slow_commits` did not see (BENCHMARKS.md).
pub const LONG_COMMIT: std::time::Duration = std::time::Duration::from_millis(3);

/// How long the writer waits for a job before it flushes what the writes
/// before left in the memtables, if that is at least [`IDLE_FLUSH_BYTES`].
/// Flushes are atomic across families, so the first one after a
/// provider's burst (set off by whichever family fills first, most often
/// the audit index under the verifications that follow) writes every
/// family's memtable at once: a few hundred megabytes, in the middle of
/// those requests. Written in a pause instead, the same bytes are out of
/// their way (BENCHMARKS.md, "The first verification run after ingest").
pub const IDLE_FLUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Memtable bytes worth a flush when the writer is idle, over all
/// families (the hashed memtables of records and history count 4 MiB
/// each when empty): half of one family's buffer; less would only make
/// small files to merge.
pub const IDLE_FLUSH_BYTES: u64 = 32 << 20;

/// Starts a background flush if the memtables hold [`IDLE_FLUSH_BYTES`];
/// a failure is logged (the flush RocksDB makes when a buffer fills is
/// still to come).
fn flush_when_idle(store: &Store) {
    let held = store.engine().unflushed_bytes();
    if held >= IDLE_FLUSH_BYTES {
        if let Err(e) = store.engine().flush_in_background() {
            tracing::warn!(error = %e, held, "the idle writer could not start a flush");
        }
    }
}

/// A job too large for one group: what is left of it, written a slice per
/// group, and what its written slices returned.
struct Carried {
    rest: std::vec::IntoIter<Update>,
    /// Go with the first slice.
    events: Vec<AuditEvent>,
    uses: Vec<Uses>,
    extra: WriteBatch,
    /// Key mappings sealed before the job was queued (`seal_new_keys`), by
    /// pseudonym: each goes with the slice of its update, where the store
    /// looks for it instead of sealing the key again.
    mappings: HashMap<Vec<u8>, Vec<u8>>,
    reply: Reply,
    outcomes: Vec<Outcome>,
    first_audit_seq: Option<u64>,
}

/// Where a slice's answer is left for the writer, which folds it into its
/// job's.
type Slot = Arc<Mutex<Option<JobResult>>>;

impl Carried {
    fn of(j: Job) -> Carried {
        let outcomes = Vec::with_capacity(j.updates.len());
        let (mut extra, mut mappings) = (WriteBatch::new(), HashMap::new());
        for op in j.extra.into_ops() {
            match op {
                BatchOp::Put { cf: Cf::KeyMap, key, value } => {
                    mappings.insert(key, value);
                }
                BatchOp::Put { cf, key, value } => extra.put(cf, key, value),
                BatchOp::Delete { cf, key } => extra.delete(cf, key),
                BatchOp::DeleteRange { cf, start, end } => extra.delete_range(cf, start, end),
            }
        }
        Carried { rest: j.updates.into_iter(), events: j.events, uses: j.uses, extra, mappings, reply: j.reply, outcomes, first_audit_seq: None }
    }

    /// The next slice, as a job that leaves its answer in the slot.
    fn next_slice(&mut self, store: &Store) -> (Job, Slot) {
        let n = slice_len(self.rest.as_slice());
        let updates: Vec<Update> = self.rest.by_ref().take(n).collect();
        let mut extra = std::mem::take(&mut self.extra);
        if !self.mappings.is_empty() {
            for u in &updates {
                let pid = store.pseudonym(&u.key);
                if let Some(sealed) = self.mappings.remove(&pid.0[..]) {
                    extra.put(Cf::KeyMap, pid.0.to_vec(), sealed);
                }
            }
            // Any left over (none from `seal_new_keys`) go with the last.
            if self.rest.as_slice().is_empty() {
                for (pid, sealed) in self.mappings.drain() {
                    extra.put(Cf::KeyMap, pid, sealed);
                }
            }
        }
        let slot: Slot = Arc::new(Mutex::new(None));
        let into = slot.clone();
        let job = Job {
            updates,
            events: std::mem::take(&mut self.events),
            uses: std::mem::take(&mut self.uses),
            extra,
            reply: Box::new(move |r| *into.lock().unwrap_or_else(|e| e.into_inner()) = Some(r)),
            guard: None,
            batch: false,
            journaled: false,
        };
        (job, slot)
    }

    /// Takes in a slice's answer; the job's own answer once it is whole
    /// (its last slice written, or a slice failed).
    fn fold(&mut self, r: JobResult) -> Option<JobResult> {
        match r {
            Ok(done) => {
                self.outcomes.extend(done.outcomes);
                let first = *self.first_audit_seq.get_or_insert(done.first_audit_seq);
                let whole = self.rest.as_slice().is_empty();
                whole.then(|| Ok(JobDone { outcomes: std::mem::take(&mut self.outcomes), first_audit_seq: first, last_seq: done.last_seq }))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// A group's size so far.
#[derive(Default)]
struct Size {
    /// Updates and events.
    items: usize,
    updates: usize,
}

impl Size {
    fn add(&mut self, j: &Job) {
        self.items += j.updates.len() + j.audited();
        self.updates += j.updates.len();
    }

    /// No more jobs may join the group.
    fn full(&self) -> bool {
        self.items >= MAX_GROUP_ITEMS || self.updates >= MAX_GROUP_UPDATES
    }
}

/// How many of `updates` go in one slice: at most [`SLICE_UPDATES`], and
/// fewer once their values pass [`SLICE_BYTES`]; at least one.
fn slice_len(updates: &[Update]) -> usize {
    let mut bytes = 0usize;
    for (i, u) in updates.iter().take(SLICE_UPDATES).enumerate() {
        bytes += approx_bytes(u);
        if bytes > SLICE_BYTES {
            return i.max(1);
        }
    }
    updates.len().min(SLICE_UPDATES)
}

/// About how many bytes an update writes (its field values and names).
fn approx_bytes(u: &Update) -> usize {
    let fields = match &u.op {
        crate::store::UpdateOp::Upsert(fields) => fields
            .iter()
            .map(|(name, v)| {
                name.len()
                    + match v {
                        Value::Str(s) | Value::Decimal(s) | Value::Code(s) => s.len(),
                        Value::Bytes(b) => b.len(),
                        _ => 8,
                    }
            })
            .sum(),
        crate::store::UpdateOp::Delete => 0,
    };
    64 + fields
}

/// Whether `j` is written in slices. Never a guarded job: the jobs of a
/// chain are written in order, and a later one must not land between the
/// slices of an earlier one.
fn sliced(j: &Job) -> bool {
    j.guard.is_none() && slice_len(&j.updates) < j.updates.len()
}

/// Whether `j`, not written in slices, is batch work set aside whole.
/// Never a guarded job, for the same reason.
fn bulky(j: &Job) -> bool {
    j.guard.is_none() && j.batch
}

/// What ended the writer's wait for work.
enum Woke {
    Job(Job),
    /// Records of uses were queued.
    Nudge,
    /// Nothing came for [`IDLE_FLUSH_AFTER`].
    Idle,
    /// Every sender is gone: shut down.
    Closed,
}

fn writer_loop(store: Arc<Store>, rx: Receiver<Job>, stats: Arc<CommitStats>, seq: Arc<tokio::sync::watch::Sender<u64>>, mut gather: Gather) {
    let nudges = store.pending_uses().nudges();
    // Large jobs, oldest first; one slice of the first goes in each group.
    let mut carried: VecDeque<Carried> = VecDeque::new();
    // Batch work, in the order submitted; a few jobs go in a group.
    let mut bulk: VecDeque<Job> = VecDeque::new();
    // A job taken from the queue: answered if abandoned, set aside if
    // large or batch work, else added to the group. Counted once here: a failed group
    // tried again job by job, or a job written in slices, writes more
    // groups, not more jobs.
    // A job set aside still counts as queued until it is answered.
    let take = |j: Job, group: &mut Vec<Job>, carried: &mut VecDeque<Carried>, bulk: &mut VecDeque<Job>, size: &mut Size| {
        if j.guard.as_ref().is_some_and(|g| g.load(Ordering::Acquire)) {
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            (j.reply)(Err(Arc::new(Error::Abandoned)));
            return;
        }
        stats.jobs.fetch_add(1, Ordering::Relaxed);
        stats.items.fetch_add((j.updates.len() + j.audited()) as u64, Ordering::Relaxed);
        if sliced(&j) {
            stats.sliced_jobs.fetch_add(1, Ordering::Relaxed);
            carried.push_back(Carried::of(j));
            return;
        }
        if bulky(&j) {
            stats.bulk_jobs.fetch_add(1, Ordering::Relaxed);
            bulk.push_back(j);
            return;
        }
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        size.add(&j);
        group.push(j);
    };
    // Whether the last group carried set-aside work, and whether that was
    // batch work (the next turn is then a slice's, if any).
    let (mut heavy_last, mut bulk_last) = (false, false);
    loop {
        let mut group: Vec<Job> = Vec::new();
        let mut size = Size::default();
        if carried.is_empty() && bulk.is_empty() {
            // Nothing set aside: wait for work (none left: shut down). A
            // pause after writes is the time to flush what they left in
            // the memtables (see `IDLE_FLUSH_AFTER`).
            // Records of uses are entered once due (see `uses::ENTER_AFTER`);
            // a job coming first takes them along.
            let pending = store.pending_uses();
            let woke = loop {
                let due = pending.due();
                let now = std::time::Instant::now();
                if due.is_some_and(|d| d <= now) {
                    break Woke::Nudge;
                }
                let wait = due.map_or(IDLE_FLUSH_AFTER, |d| d - now);
                let woke = crossbeam::channel::select! {
                    recv(rx) -> j => j.map_or(Woke::Closed, Woke::Job),
                    recv(nudges) -> _ => Woke::Nudge,
                    default(wait) => Woke::Idle,
                };
                match woke {
                    // Nothing came and nothing is queued: a pause after
                    // writes, the time to flush what they left.
                    Woke::Idle if due.is_none() => {
                        flush_when_idle(&store);
                        match crossbeam::channel::select! {
                            recv(rx) -> j => j.map_or(Woke::Closed, Woke::Job),
                            recv(nudges) -> _ => Woke::Nudge,
                        } {
                            Woke::Nudge => continue,
                            w => break w,
                        }
                    }
                    Woke::Idle | Woke::Nudge => continue,
                    w => break w,
                }
            };
            match woke {
                Woke::Job(j) => take(j, &mut group, &mut carried, &mut bulk, &mut size),
                Woke::Nudge | Woke::Idle => {}
                Woke::Closed => {
                    // Shut down: what was recorded so far goes in first.
                    if let Some(job) = uses_job(&store, &stats) {
                        let _ = commit_group(&store, vec![job], &stats, &seq);
                    }
                    return;
                }
            }
        }
        let gather_queued = |group: &mut Vec<Job>, carried: &mut VecDeque<Carried>, bulk: &mut VecDeque<Job>, size: &mut Size| {
            while !size.full() && carried.len() < MAX_SET_ASIDE && bulk.len() < MAX_BULK_SET_ASIDE {
                match rx.try_recv() {
                    Ok(j) => take(j, group, carried, bulk, size),
                    Err(_) => break,
                }
            }
        };
        gather_queued(&mut group, &mut carried, &mut bulk, &mut size);
        let closed = !carried.is_empty() || !bulk.is_empty() || size.full();
        if let Some(pause) = gather.pause(group.len(), closed, std::time::Instant::now()) {
            // A sleep, not a timed wait on the queue: each job arriving
            // meanwhile would wake the writer.
            std::thread::sleep(pause);
            stats.gather_pauses.fetch_add(1, Ordering::Relaxed);
            gather_queued(&mut group, &mut carried, &mut bulk, &mut size);
        }
        // Set-aside work goes in every other group at least: after a group
        // with some, the jobs that queued while it was written go first,
        // on their own, so that they wait for one turn and not two; and a
        // steady stream of small jobs cannot put a large one off for good.
        // Slices and batch work take turns.
        let mut slot = None;
        let mut heavy = false;
        if group.is_empty() || !heavy_last {
            let slice_turn = bulk.is_empty() || bulk_last;
            match carried.front_mut() {
                Some(c) if slice_turn => {
                    let (job, s) = c.next_slice(&store);
                    stats.slices.fetch_add(1, Ordering::Relaxed);
                    size.add(&job);
                    group.push(job);
                    slot = Some(s);
                    (heavy, bulk_last) = (true, false);
                }
                _ if !bulk.is_empty() => {
                    let mut events = 0;
                    while let Some(j) = bulk.pop_front() {
                        events += j.audited();
                        stats.queued.fetch_sub(1, Ordering::Relaxed);
                        size.add(&j);
                        group.push(j);
                        if bulk.front().is_none_or(|next| events + next.audited() > BULK_GROUP_EVENTS) {
                            break;
                        }
                    }
                    (heavy, bulk_last) = (true, true);
                }
                _ => {}
            }
        }
        heavy_last = heavy;
        // Uses first: every one queued was answered before the jobs of
        // this group that a caller sent after its answer, and the chain
        // keeps the order things happened in. (Uses in compact form of the
        // group's other jobs, a comparison job's chunks, are chained with
        // them, before the group's events: none of those jobs has been
        // answered yet, so no order a caller saw is changed.)
        // Only groups of requests' jobs time the pause (see `Gather::committed`).
        let timed = !heavy && !group.is_empty();
        if let Some(job) = uses_job(&store, &stats) {
            size.add(&job);
            group.insert(0, job);
        }
        if group.is_empty() {
            continue;
        }
        stats.largest_group.fetch_max(size.items as u64, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let committed = commit_group(&store, group, &stats, &seq);
        if timed && committed.is_ok() {
            gather.committed(started, std::time::Instant::now());
        }
        if let Err(why) = committed {
            // The store's state in memory may no longer match the disk (a
            // panic between the write and its bookkeeping): every job from
            // here on is refused, never written, until a restart reopens
            // the store. Better than callers waiting on a dead thread.
            tracing::error!(panic = %why, "the commit writer panicked; refusing every commit until restart");
            let e = Arc::new(Error::Engine(format!("the commit writer stopped after a panic ({why}); restart the server")));
            store.pending_uses().close();
            let refuse = |reply: Reply| {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                answer(reply, Err(e.clone()));
            };
            carried.drain(..).for_each(|c| refuse(c.reply));
            bulk.drain(..).for_each(|j| refuse(j.reply));
            rx.iter().for_each(|j| refuse(j.reply));
            return;
        }
        let Some(slot) = slot else { continue };
        let r = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let r = r.unwrap_or_else(|| Err(Arc::new(Error::Engine("a slice of a large commit was not answered".into()))));
        let whole = carried.front_mut().and_then(|c| c.fold(r));
        if let Some(r) = whole {
            if let Some(c) = carried.pop_front() {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                answer(c.reply, r);
            }
        }
    }
}

/// What the jobs of a group the store panicked on are answered.
fn panicked(why: &str) -> Arc<Error> {
    Arc::new(Error::Engine(format!("the commit writer panicked ({why})")))
}

/// Answers a job; a reply that panics is the caller's loss, not the
/// writer's, which goes on answering the rest.
fn answer(reply: Reply, result: JobResult) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || reply(result))).is_err() {
        tracing::error!("a commit's reply panicked");
    }
}

/// Commits `group` as one write and answers each job. If the write fails
/// and the group holds more than one job, each job is tried again alone,
/// so that one job the store refuses (an update it cannot apply, a record
/// it cannot read) fails only itself: a failed write changes nothing, in
/// memory or on disk. `Err` (the panic's message) if the store panicked.
fn commit_group(store: &Store, group: Vec<Job>, stats: &CommitStats, seq: &tokio::sync::watch::Sender<u64>) -> Result<(), String> {
    let mut updates = Vec::new();
    let mut events = Vec::new();
    let mut uses = Vec::new();
    let mut extra = WriteBatch::new();
    let mut extras = Vec::with_capacity(group.len());
    let mut shape = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    let alone = group.len() == 1;
    let durability = if group.iter().all(|j| j.journaled) { Durability::Buffered } else { Durability::Sync };
    // The writer's own job entering the journal's records of uses (the
    // only journaled one): nobody waits on it to learn of a failure.
    let entering = alone && durability == Durability::Buffered;
    for mut j in group {
        shape.push((j.updates.len(), j.events.len(), j.uses.len(), j.journaled));
        updates.append(&mut j.updates);
        events.append(&mut j.events);
        uses.append(&mut j.uses);
        let mine = std::mem::take(&mut j.extra);
        if !alone && !mine.is_empty() {
            // Kept for a retry alone; most jobs have none.
            extra.extend(mine.clone());
        }
        extras.push(mine);
        replies.push(j.reply);
    }
    if alone {
        extra = extras.pop().unwrap_or_default();
    }
    stats.groups.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.commit_all(&updates, &uses, &events, extra, durability)));
    let took = started.elapsed();
    stats.longest_commit_us.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    if took > LONG_COMMIT {
        stats.long_commits.fetch_add(1, Ordering::Relaxed);
    }
    if took > SLOW_COMMIT {
        stats.slow_commits.fetch_add(1, Ordering::Relaxed);
    }
    let committed = match committed {
        Ok(c) => c,
        Err(panic) => {
            let why = crate::panic_text(&*panic);
            let e = panicked(&why);
            for reply in replies {
                answer(reply, Err(e.clone()));
            }
            return Err(why);
        }
    };
    match committed {
        Ok(done) => {
            // Before the replies: whoever is answered can already see it.
            raise_to(seq, done.last_seq);
            let mut outcomes = done.outcomes.into_iter();
            // Uses in compact form are chained before every job's events:
            // a job's entries start among the one or the other.
            let lines = |u: &[Uses]| u.iter().map(|u| u.len() as u64).sum::<u64>();
            let mut uses_seq = done.first_audit_seq;
            let mut events_seq = uses_seq + lines(&uses);
            let mut uses = uses.as_slice();
            for ((nu, ne, nr, _), reply) in shape.into_iter().zip(replies) {
                let mine: Vec<Outcome> = outcomes.by_ref().take(nu).collect();
                let (own, rest) = uses.split_at(nr.min(uses.len()));
                uses = rest;
                let first_audit_seq = if own.is_empty() { events_seq } else { uses_seq };
                answer(reply, Ok(JobDone { outcomes: mine, first_audit_seq, last_seq: done.last_seq }));
                uses_seq += lines(own);
                events_seq += ne as u64;
            }
            Ok(())
        }
        Err(e) if alone => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "commit failed");
            if entering {
                // Queued again, to be tried later: dropped, a later
                // entering would record a position past them.
                store.pending_uses().put_back(uses);
            }
            if let Some(reply) = replies.pop() {
                answer(reply, Err(Arc::new(e)));
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = replies.len(), "group commit failed; trying each job alone");
            let (mut updates, mut events, mut uses) = (updates.into_iter(), events.into_iter(), uses.into_iter());
            let mut jobs = shape.into_iter().zip(replies).zip(extras);
            while let Some((((nu, ne, nr, journaled), reply), extra)) = jobs.next() {
                let job = Job {
                    updates: updates.by_ref().take(nu).collect(),
                    events: events.by_ref().take(ne).collect(),
                    uses: uses.by_ref().take(nr).collect(),
                    extra,
                    reply,
                    guard: None,
                    batch: false,
                    journaled,
                };
                if let Err(why) = commit_group(store, vec![job], stats, seq) {
                    // The store panicked: the jobs not yet tried are
                    // answered too, not dropped unanswered.
                    let e = panicked(&why);
                    for ((_, reply), _) in jobs {
                        answer(reply, Err(e.clone()));
                    }
                    return Err(why);
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Action;
    use crate::clock::ManualClock;
    use crate::engine::mem::MemEngine;
    use crate::keys::{PersonKey, SubjectKey};
    use crate::store::UpdateOp;
    use crate::{Catalog, Error, Secret, Value};
    use std::sync::mpsc;

    fn store() -> Arc<Store> {
        mem_store().1
    }

    /// A store and the engine under it, for tests that slow or break its
    /// writes.
    fn mem_store() -> (Arc<MemEngine>, Arc<Store>) {
        let engine = Arc::new(MemEngine::new());
        let s = Store::open(engine.clone(), &Secret::from_bytes([5; 32]), Arc::new(Catalog::builtin()), Arc::new(ManualClock::new(1_000)));
        (engine, Arc::new(s.unwrap()))
    }

    fn key(i: u16) -> SubjectKey {
        let d = time::Date::from_calendar_date(1980, time::Month::May, 5).unwrap();
        SubjectKey::Person(PersonKey::from_parts("440305", d, i).unwrap())
    }

    fn upd(i: u16, v: u64) -> Update {
        Update {
            provider: None,
            link: None,
            dataset: "death".into(),
            key: key(i),
            version: v,
            op: UpdateOp::Upsert(vec![("name".into(), Value::Str("x".into()))]),
        }
    }

    fn event(i: u16) -> AuditEvent {
        AuditEvent {
            department: "d".into(),
            operator: None,
            operator_verified: false,
            purpose: "p".into(),
            purpose_code: None,
            action: Action::Lookup,
            key: Some(key(i)),
            datasets: vec!["death".into()],
            fields: vec![],
            outcome: "ok".into(),
            key_mapped: false,
            pid: None,
            rejected_lines: 0,
            grants: Vec::new(),
        }
    }

    /// A record of uses of several departments is stored as one chunk per
    /// run of one department's rows, each use at its own number and under
    /// its own department; the chain and index checks pass.
    #[test]
    fn compact_uses_of_several_departments_are_stored_run_by_run() {
        let s = store();
        let events: Vec<AuditEvent> = [("a", 1), ("a", 2), ("b", 3), ("a", 4), ("a", 5)]
            .into_iter()
            .map(|(d, i)| AuditEvent { department: d.into(), ..event(i) })
            .collect();
        let uses = Uses::of_events(&events, |k| s.pseudonym(k));
        s.commit_all(&[], &[uses], &[event(9)], WriteBatch::new(), crate::Durability::Sync).unwrap();
        for (i, d, seq) in [(1, "a", 1), (2, "a", 2), (3, "b", 3), (4, "a", 4), (5, "a", 5), (9, "d", 6)] {
            let q = crate::audit::AuditQuery { key: Some(key(i)), limit: 10, ..Default::default() };
            let got: Vec<(String, u64)> = s.audit_query(&q).unwrap().into_iter().map(|e| (e.department, e.seq)).collect();
            assert_eq!(got, vec![(d.to_string(), seq)], "key {i}");
        }
        let q = crate::audit::AuditQuery { department: Some("a".into()), limit: 10, ..Default::default() };
        assert_eq!(s.audit_query(&q).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 4, 5]);
        assert!(s.audit_verify().unwrap().ok);
        assert!(s.audit_index_check().unwrap().ok);
    }

    /// In a group that chains compact uses before events, each job hears
    /// where its own entries start.
    #[test]
    fn each_job_of_a_group_hears_where_its_audit_entries_start() {
        let s = store();
        let (stats, seq) = (CommitStats::default(), tokio::sync::watch::channel(0).0);
        let got: Arc<Mutex<Vec<(usize, u64)>>> = Default::default();
        let job = |n: usize, events: Vec<AuditEvent>, uses: Vec<Uses>| {
            let got = got.clone();
            Job {
                updates: vec![],
                events,
                uses,
                extra: WriteBatch::new(),
                reply: Box::new(move |r: JobResult| got.lock().unwrap().push((n, r.unwrap().first_audit_seq))),
                guard: None,
                batch: false,
                journaled: false,
            }
        };
        let compact = |from: u16, n: u16| Uses::of_events(&(from..from + n).map(event).collect::<Vec<_>>(), |k| s.pseudonym(k));
        let group = vec![job(0, vec![], vec![compact(1, 2)]), job(1, vec![event(10), event(11), event(12)], vec![]), job(2, vec![], vec![compact(20, 1)])];
        commit_group(&s, group, &stats, &seq).unwrap();
        let mut got = got.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec![(0, 1), (1, 4), (2, 3)]);
        // And that is where the trail has them.
        let at = |i: u16| {
            let q = crate::audit::AuditQuery { key: Some(key(i)), limit: 10, ..Default::default() };
            s.audit_query(&q).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>()
        };
        assert_eq!((at(1), at(2), at(20), at(10), at(12)), (vec![1], vec![2], vec![3], vec![4], vec![6]));
    }

    /// The writer waits for more jobs only when busy, with a small group
    /// of more than one job and nothing set aside, and then about as long
    /// as its recent commits took, never past the limit.
    #[test]
    fn a_busy_writer_pauses_before_small_groups_as_long_as_a_commit_takes() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let us = |n: u64| Duration::from_micros(n);
        let mut g = Gather::new(us(200));
        assert_eq!(g.pause(4, false, t0), None, "no commit yet: not busy");
        g.committed(t0, t0 + us(150));
        let now = t0 + us(400);
        assert_eq!(g.pause(4, false, now), Some(us(150)), "as long as the commit took");
        assert_eq!(g.pause(1, false, now), None, "a lone job goes at once");
        assert_eq!(g.pause(SMALL_GROUP, false, now), Some(us(150)));
        assert_eq!(g.pause(SMALL_GROUP + 1, false, now), None, "a large group shares its write already");
        assert_eq!(g.pause(4, true, now), None, "a full group, or set-aside work, waits for no one");
        assert_eq!(g.pause(4, false, t0 + us(150) + BUSY_WITHIN), None, "idle since the last group");
        // A slow commit moves the pause a tenth of the way; the limit holds.
        g.committed(now, now + us(1150));
        assert_eq!(g.pause(4, false, now + us(1200)), Some(us(200)));
        let mut wide = Gather::new(us(1000));
        wide.committed(t0, t0 + us(150));
        wide.committed(t0, t0 + us(1150));
        assert_eq!(wide.pause(4, false, t0 + us(1200)), Some(us(250)), "150 + (1150 - 150) / 10");
        let mut fast = Gather::new(us(200));
        fast.committed(t0, t0 + us(20));
        assert_eq!(fast.pause(4, false, t0 + us(30)), Some(us(20)), "a fast disk, a short pause");
        let mut off = Gather::new(Duration::ZERO);
        off.committed(t0, t0 + us(150));
        assert_eq!(off.pause(4, false, t0 + us(200)), None, "a zero limit never pauses");
    }

    /// Jobs that keep a writer busy a few at a time make it pause, and
    /// every job is still answered; with a zero limit it never pauses.
    #[test]
    fn concurrent_jobs_on_a_slow_disk_are_gathered() {
        for limit in [GATHER_PAUSE, std::time::Duration::ZERO] {
            let (engine, s) = mem_store();
            engine.delay_writes(std::time::Duration::from_micros(500));
            let c = Arc::new(Committer::start_with(s.clone(), 100, limit));
            let threads: Vec<_> = (0..4u16)
                .map(|t| {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        for n in 0..20u16 {
                            let (tx, rx) = mpsc::channel();
                            c.submit(vec![], vec![event(t * 100 + n)], Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
                            assert!(rx.recv().unwrap());
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let pauses = c.stats().gather_pauses.load(Ordering::Relaxed);
            if limit.is_zero() {
                assert_eq!(pauses, 0);
            } else {
                assert!(pauses > 0, "80 jobs from 4 threads on 500 µs commits, no pause");
            }
            assert_eq!(s.audit_verify().unwrap().entries, 80);
        }
    }

    #[test]
    fn a_slow_group_commit_is_counted_and_its_length_kept() {
        let (engine, s) = mem_store();
        let mut c = Committer::start(s, 100);
        let commit = |c: &Committer, i: u16| {
            let (tx, rx) = mpsc::channel();
            c.submit(vec![upd(i, 1)], vec![event(i)], Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
            assert!(rx.recv().unwrap());
        };
        commit(&c, 1);
        let fast = c.stats().longest_commit_us.load(Ordering::Relaxed);
        let slow_before = c.stats().slow_commits.load(Ordering::Relaxed);
        let long_before = c.stats().long_commits.load(Ordering::Relaxed);
        engine.delay_writes(SLOW_COMMIT * 3);
        commit(&c, 2);
        let longest = c.stats().longest_commit_us.load(Ordering::Relaxed);
        assert!(longest >= SLOW_COMMIT.as_micros() as u64 * 3, "{fast} then {longest}");
        assert_eq!(c.stats().slow_commits.load(Ordering::Relaxed), slow_before + 1);
        assert_eq!(c.stats().long_commits.load(Ordering::Relaxed), long_before + 1, "a slow commit is a long one too");
        // The longest is kept when shorter ones follow (a mark no commit
        // here can reach stands in for it, however loaded the machine).
        let mark = 3_600_000_000;
        c.stats().longest_commit_us.store(mark, Ordering::Relaxed);
        engine.delay_writes(std::time::Duration::ZERO);
        commit(&c, 3);
        assert_eq!(c.stats().longest_commit_us.load(Ordering::Relaxed), mark);
        c.shutdown();
    }

    #[test]
    fn concurrent_jobs_are_answered_in_order_with_their_own_outcomes() {
        let s = store();
        let c = Committer::start(s.clone(), 10_000);
        let (tx, rx) = mpsc::channel();
        for i in 0..200u16 {
            let tx = tx.clone();
            // Every job writes key i twice (v1 then a stale v1) and audits once.
            c.submit(vec![upd(i, 1), upd(i, 1)], vec![event(i)], Box::new(move |r| tx.send((i, r)).unwrap()))
                .unwrap();
        }
        drop(tx);
        let mut seen_audit = std::collections::HashSet::new();
        for (i, r) in rx.iter() {
            let done = r.unwrap();
            assert_eq!(done.outcomes.len(), 2, "job {i}");
            assert!(matches!(done.outcomes[0], Outcome::Applied { .. }));
            assert_eq!(done.outcomes[1], Outcome::Stale { current: 1 });
            assert!(seen_audit.insert(done.first_audit_seq));
        }
        assert_eq!(seen_audit.len(), 200);
        assert_eq!(s.last_seq(), 200);
        let check = s.audit_verify().unwrap();
        assert!(check.ok && check.entries == 200, "{check:?}");
        assert!(c.stats().groups.load(Ordering::Relaxed) <= 200);
    }

    #[test]
    fn waiting_submissions_are_not_refused_while_the_writer_keeps_up() {
        let s = store();
        let mut c = Committer::start(s.clone(), 1);
        let (tx, rx) = mpsc::channel();
        for i in 0..500u16 {
            let tx = tx.clone();
            let reply: Reply = Box::new(move |r| tx.send(r.is_ok()).unwrap());
            let patience = std::time::Duration::from_secs(30);
            c.submit_waiting(vec![upd(i, 1)], vec![event(i)], WriteBatch::new(), reply, patience).unwrap();
        }
        drop(tx);
        c.shutdown();
        assert_eq!(rx.iter().filter(|ok| *ok).count(), 500);
        assert_eq!(s.audit_verify().unwrap().entries, 500);
        let r = c.submit_waiting(vec![], vec![], WriteBatch::new(), Box::new(|_| {}), std::time::Duration::ZERO);
        assert_eq!(r, Err(SubmitError::Closed));
    }

    #[test]
    fn a_raised_guard_drops_the_rest_of_its_chain_unwritten() {
        let s = store();
        let mut c = Committer::start(s.clone(), 10_000);
        let guard = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let submit = |i: u16| {
            let (tx, g) = (tx.clone(), guard.clone());
            // The reply of job 10 raises the guard, as a failed write's would.
            let reply: Reply = Box::new(move |r| {
                if i == 10 {
                    g.store(true, Ordering::Release);
                }
                tx.send((i, r.map(|_| ()).map_err(|e| matches!(*e, Error::Abandoned)))).unwrap();
            });
            c.submit_guarded(vec![upd(i, 1)], vec![], WriteBatch::new(), reply, Some(guard.clone())).unwrap();
        };
        for i in 0..=10 {
            submit(i);
        }
        let mut answers: Vec<(u16, Result<(), bool>)> = (0..=10).map(|_| rx.recv().unwrap()).collect();
        // Queued after the raise: dropped, however they are grouped.
        for i in 11..100 {
            submit(i);
        }
        // A job outside the chain is written whatever the guard says.
        let (tx2, rx2) = mpsc::channel();
        c.submit(vec![upd(500, 1)], vec![], Box::new(move |r| tx2.send(r.is_ok()).unwrap())).unwrap();
        c.shutdown();
        drop(tx);
        answers.extend(rx.iter());
        answers.sort_by_key(|(i, _)| *i);
        assert_eq!(answers.len(), 100);
        assert!(answers[..=10].iter().all(|(_, r)| r.is_ok()), "{answers:?}");
        assert!(answers[11..].iter().all(|(_, r)| *r == Err(true)), "{answers:?}");
        assert!(rx2.recv().unwrap());
        assert_eq!(s.last_seq(), 12, "jobs 0..=10 and the unguarded one");
        assert!(s.get(&key(11), "death", None).unwrap().is_none());
    }

    #[test]
    fn full_queue_is_refused_and_shutdown_drains() {
        let s = store();
        let mut c = Committer::start(s.clone(), 1);
        let mut refused = 0;
        let (tx, rx) = mpsc::channel();
        for i in 0..2000u16 {
            let tx = tx.clone();
            match c.submit(vec![upd(i % 900, 1 + i as u64)], vec![], Box::new(move |r| tx.send(r.is_ok()).unwrap())) {
                Ok(()) => {}
                Err(SubmitError::Overloaded) => refused += 1,
                Err(SubmitError::Closed) => panic!("closed"),
            }
        }
        drop(tx);
        c.shutdown();
        let answered: Vec<bool> = rx.iter().collect();
        assert!(refused > 0, "a one-slot queue never filled");
        assert_eq!(answered.len() + refused, 2000);
        assert!(answered.iter().all(|ok| *ok));
        assert_eq!(c.submit(vec![], vec![], Box::new(|_| {})), Err(SubmitError::Closed));
    }

    /// A job the store refuses, queued with others, fails alone: the group
    /// is tried again job by job, and the others are written.
    #[test]
    fn a_refused_job_fails_only_itself_not_its_group() {
        let (engine, s) = mem_store();
        let mut c = Committer::start(s.clone(), 100);
        let (tx, rx) = mpsc::channel();
        // A slow first write, so that the next jobs queue up behind it and
        // are taken as one group.
        engine.delay_writes(std::time::Duration::from_millis(200));
        let send = |i: u16, u: Update| {
            let tx = tx.clone();
            c.submit(vec![u], vec![event(i)], Box::new(move |r| tx.send((i, r.map(|_| ()).map_err(|e| e.to_string()))).unwrap())).unwrap();
        };
        send(0, upd(0, 1));
        std::thread::sleep(std::time::Duration::from_millis(50));
        engine.delay_writes(std::time::Duration::ZERO);
        send(1, upd(1, 1));
        send(2, Update { dataset: "no-such-dataset".into(), ..upd(2, 1) });
        send(3, upd(3, 1));
        let mut got: Vec<(u16, Result<(), String>)> = (0..4).map(|_| rx.recv().unwrap()).collect();
        got.sort_by_key(|(i, _)| *i);
        assert!(got[0].1.is_ok() && got[1].1.is_ok() && got[3].1.is_ok(), "{got:?}");
        assert!(got[2].1.as_ref().is_err_and(|e| e.contains("no-such-dataset")), "{got:?}");
        assert_eq!(c.stats().failures.load(Ordering::Relaxed), 1, "the refused job alone");
        assert!(c.stats().groups.load(Ordering::Relaxed) >= 5, "the group of three, then each alone");
        assert_eq!(c.stats().jobs.load(Ordering::Relaxed), 4, "each job counted once, though written twice");
        assert_eq!(c.stats().items.load(Ordering::Relaxed), 8);
        for i in [0, 1, 3] {
            assert!(s.get(&key(i), "death", None).unwrap().is_some(), "{i}");
        }
        let check = s.audit_verify().unwrap();
        assert!(check.ok && check.entries == 3, "{check:?}");
        c.shutdown();
    }

    /// A store, its committer, and the writer held (see [`hold_writer`]).
    fn held() -> (Arc<Store>, Committer, mpsc::Sender<()>) {
        let s = store();
        let c = Committer::start(s.clone(), 100);
        let release = hold_writer(&c);
        (s, c, release)
    }

    /// Updates of the person `i`, versions 1 to `n`.
    fn versions(i: u16, n: usize) -> Vec<Update> {
        (1..=n as u64).map(|v| upd(i, v)).collect()
    }

    /// The writer held in a reply until `release` is dropped or sent to,
    /// so that what is submitted meanwhile queues up behind it.
    fn hold_writer(c: &Committer) -> mpsc::Sender<()> {
        let (release, gate) = mpsc::channel::<()>();
        let (held, is_held) = mpsc::channel();
        c.submit(vec![upd(900, 1)], vec![], Box::new(move |_| {
            held.send(()).unwrap();
            let _ = gate.recv();
        }))
        .unwrap();
        is_held.recv().unwrap();
        release
    }

    /// A job of several slices lets a job queued after it through before
    /// its own answer, and still comes back whole: every update's outcome
    /// in order, its audit entry, the last sequence number.
    #[test]
    fn a_large_job_is_written_in_slices_with_others_between_them() {
        let (s, mut c, release) = held();
        let n = 2 * SLICE_UPDATES + 10;
        let (tx, rx) = mpsc::channel();
        let big_tx = tx.clone();
        let large = versions(1, n);
        c.submit(large, vec![event(1)], Box::new(move |r| big_tx.send(("large", r)).unwrap())).unwrap();
        c.submit(vec![], vec![event(2)], Box::new(move |r| tx.send(("small", r)).unwrap())).unwrap();
        drop(release);
        let (first, small) = rx.recv().unwrap();
        let (second, large) = rx.recv().unwrap();
        assert_eq!((first, second), ("small", "large"), "the small job waits for a slice, not for the whole");
        let (small, large) = (small.unwrap(), large.unwrap());
        assert_eq!(large.outcomes.len(), n);
        let seqs: Vec<u64> = large.outcomes.iter().map(|o| match o {
            Outcome::Applied { seq } => *seq,
            other => panic!("{other:?}"),
        }).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "outcomes in order");
        assert_eq!(large.last_seq, *seqs.last().unwrap());
        assert_eq!(s.get(&key(1), "death", None).unwrap().unwrap().version, n as u64);
        // The large job's entry went with its first slice, after the small
        // job's group.
        assert!(large.first_audit_seq > small.first_audit_seq, "{large:?} {small:?}");
        let check = s.audit_verify().unwrap();
        assert!(check.ok && check.entries == 2, "{check:?}");
        assert_eq!(c.stats().jobs.load(Ordering::Relaxed), 3);
        assert_eq!(c.stats().items.load(Ordering::Relaxed), 1 + (n as u64 + 1) + 1);
        assert!(c.stats().groups.load(Ordering::Relaxed) >= 4, "the holder, the small job with the first slice, two more");
        assert_eq!((c.stats().sliced_jobs.load(Ordering::Relaxed), c.stats().slices.load(Ordering::Relaxed)), (1, 3));
        // The first slice with its job's entry, and the small job.
        assert_eq!(c.stats().largest_group.load(Ordering::Relaxed), SLICE_UPDATES as u64 + 2);
        c.shutdown();
    }

    /// `n` updates of different persons (born on different days).
    fn distinct(n: usize) -> Vec<Update> {
        let day = time::Date::from_calendar_date(1980, time::Month::May, 5).unwrap();
        (0..n)
            .map(|i| {
                let d = day + time::Duration::days((i / 900) as i64);
                let k = SubjectKey::Person(PersonKey::from_parts("440305", d, (i % 900) as u16 + 1).unwrap());
                Update { key: k, ..upd(0, 1) }
            })
            .collect()
    }

    /// Key mappings sealed before the job was queued go with the slice of
    /// their update, the job's other extra writes and its entries with the
    /// first; written, every key resolves.
    #[test]
    fn a_large_jobs_presealed_mappings_go_with_their_slices() {
        let s = store();
        let n = 2 * SLICE_UPDATES + 10;
        let updates = distinct(n);
        let mut extra = WriteBatch::new();
        s.seal_new_keys(&updates, &mut extra).unwrap();
        extra.put(Cf::Meta, b"another write".to_vec(), b"1".to_vec());
        let keys: Vec<SubjectKey> = updates.iter().map(|u| u.key).collect();
        let mut c = Carried::of(Job { updates: updates.clone(), events: vec![event(1)], uses: Vec::new(), extra: extra.clone(), reply: Box::new(|_| {}), guard: None, batch: false, journaled: false });
        let count = |j: &Job, cf: Cf| j.extra.ops().iter().filter(|op| matches!(op, BatchOp::Put { cf: c, .. } if *c == cf)).count();
        let slices: Vec<Job> = (0..3).map(|_| c.next_slice(&s).0).collect();
        assert!(c.rest.as_slice().is_empty());
        assert_eq!(slices.iter().map(|j| j.updates.len()).collect::<Vec<_>>(), [SLICE_UPDATES, SLICE_UPDATES, 10]);
        assert_eq!(slices.iter().map(|j| count(j, Cf::KeyMap)).collect::<Vec<_>>(), [SLICE_UPDATES, SLICE_UPDATES, 10]);
        assert_eq!(slices.iter().map(|j| count(j, Cf::Meta)).collect::<Vec<_>>(), [1, 0, 0]);
        assert_eq!(slices.iter().map(|j| j.events.len()).collect::<Vec<_>>(), [1, 0, 0]);
        for j in &slices {
            for u in &j.updates {
                let pid = s.pseudonym(&u.key);
                assert!(j.extra.ops().iter().any(|op| matches!(op, BatchOp::Put { cf: Cf::KeyMap, key, .. } if key[..] == pid.0[..])));
            }
        }
        // Through the writer: every key's mapping is there.
        let mut committer = Committer::start(s.clone(), 100);
        let (tx, rx) = mpsc::channel();
        committer.submit_with(updates, vec![event(1)], extra, Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
        assert!(rx.recv().unwrap());
        for k in &keys {
            assert_eq!(s.resolve(&s.pseudonym(k)).unwrap(), Some(*k));
        }
        assert_eq!(committer.stats().queued.load(Ordering::Relaxed), 0, "a job set aside is counted out once answered");
        committer.shutdown();
    }

    /// At most [`MAX_SET_ASIDE`] large jobs are set aside: the writer
    /// takes no more from the queue until one is done, so the queue's bound
    /// still holds them back (and a job behind them waits its turn).
    #[test]
    fn large_jobs_set_aside_are_bounded_and_counted_as_queued() {
        let (_, mut c, release) = held();
        let (tx, rx) = mpsc::channel();
        for i in 0..MAX_SET_ASIDE as u16 + 4 {
            let tx = tx.clone();
            let job = versions(i, SLICE_UPDATES + 1);
            c.submit(job, vec![], Box::new(move |r| tx.send(("large", r.is_ok())).unwrap())).unwrap();
        }
        c.submit(vec![], vec![event(1)], Box::new(move |r| tx.send(("small", r.is_ok())).unwrap())).unwrap();
        assert_eq!(c.stats().queued.load(Ordering::Relaxed), MAX_SET_ASIDE + 5);
        drop(release);
        let answers: Vec<(&str, bool)> = (0..MAX_SET_ASIDE + 5).map(|_| rx.recv().unwrap()).collect();
        assert!(answers.iter().all(|(_, ok)| *ok));
        let small = answers.iter().position(|(what, _)| *what == "small").unwrap();
        assert!(small > 0, "the small job was behind more large jobs than may be set aside: {answers:?}");
        assert_eq!(c.stats().queued.load(Ordering::Relaxed), 0);
        c.shutdown();
    }

    /// `n` events of the person `i`, as a batch chunk's uses.
    fn events(i: u16, n: usize) -> Vec<AuditEvent> {
        (0..n).map(|_| event(i)).collect()
    }

    /// Batch work submitted (a chunk of `n` uses of the person `i`), as the
    /// batch pipeline does; its answer goes to `tx` as `who`.
    fn batch_job<T: Send + 'static>(c: &Committer, i: u16, n: usize, tx: &mpsc::Sender<(T, JobResult)>, who: T) {
        let tx = tx.clone();
        let reply = Box::new(move |r| tx.send((who, r)).unwrap());
        c.submit_waiting(vec![], events(i, n), WriteBatch::new(), reply, std::time::Duration::from_secs(5)).unwrap();
    }

    /// Batch work (a running batch's chunks in flight) is set aside: a job
    /// queued behind it goes in the next group, not after all of it; the
    /// chunks go [`BULK_GROUP_EVENTS`] at a time, in their order whatever
    /// their size (the last, short chunk does not overtake the others),
    /// and every one is answered.
    #[test]
    fn batch_work_lets_a_job_queued_behind_it_go_first_and_keeps_its_order() {
        let (s, mut c, release) = held();
        let (tx, rx) = mpsc::channel();
        let sizes = [2048, 2048, 2048, 2048, 2048, 100];
        for (i, n) in sizes.iter().enumerate() {
            batch_job(&c, i as u16 + 1, *n, &tx, i);
        }
        // A change-feed page's many uses are not batch work.
        c.submit(vec![upd(5, 1)], events(5, 1000), Box::new(move |r| tx.send((99, r)).unwrap())).unwrap();
        assert_eq!(c.stats().queued.load(Ordering::Relaxed), sizes.len() + 1);
        drop(release);
        let answers: Vec<(usize, JobDone)> = (0..=sizes.len()).map(|_| {
            let (who, r) = rx.recv().unwrap();
            (who, r.unwrap())
        }).collect();
        let order: Vec<usize> = answers.iter().map(|(who, _)| *who).collect();
        // The small job goes in the first group, with the first two chunks
        // (4,096 events), and the other chunks two a group after it; not
        // every chunk in one group ahead of it.
        assert_eq!(order, [99, 0, 1, 2, 3, 4, 5], "{order:?}");
        let seqs: Vec<u64> = answers.iter().map(|(_, d)| d.first_audit_seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "entries in the order written: {seqs:?}");
        assert_eq!(c.stats().bulk_jobs.load(Ordering::Relaxed), sizes.len() as u64);
        assert_eq!(c.stats().groups.load(Ordering::Relaxed), 1 + 3, "the holder, then the chunks by two");
        assert_eq!(c.stats().largest_group.load(Ordering::Relaxed), 1 + 1000 + 2 * 2048);
        assert_eq!(c.stats().queued.load(Ordering::Relaxed), 0, "each counted out once answered");
        let check = s.audit_verify().unwrap();
        assert!(check.ok && check.entries == 1000 + sizes.iter().sum::<usize>() as u64, "{check:?}");
        c.shutdown();
    }

    /// Slices of a large submission and batch work take turns, a group
    /// each.
    #[test]
    fn slices_and_batch_work_take_turns() {
        let (_, mut c, release) = held();
        let (tx, rx) = mpsc::channel();
        let big = tx.clone();
        c.submit(versions(1, 3 * SLICE_UPDATES), vec![event(1)], Box::new(move |r| big.send(("large", r)).unwrap())).unwrap();
        batch_job(&c, 2, BULK_GROUP_EVENTS, &tx, "chunk");
        batch_job(&c, 3, BULK_GROUP_EVENTS, &tx, "chunk");
        c.submit(vec![], vec![event(4)], Box::new(move |r| tx.send(("small", r)).unwrap())).unwrap();
        drop(release);
        let answers: Vec<(&str, JobDone)> = (0..4).map(|_| {
            let (who, r) = rx.recv().unwrap();
            (who, r.unwrap())
        }).collect();
        let order: Vec<&str> = answers.iter().map(|(who, _)| *who).collect();
        assert_eq!(order, ["small", "chunk", "chunk", "large"]);
        // Groups: the holder; the small job with the first chunk; the first
        // slice (with the large job's entry); the second chunk; the other
        // two slices, one a group.
        let seq = |i: usize| answers[i].1.first_audit_seq;
        assert!(seq(0) < seq(1) && seq(1) < seq(3) && seq(3) < seq(2), "the large job's entry between the chunks: {:?}", (0..4).map(seq).collect::<Vec<_>>());
        assert_eq!(c.stats().groups.load(Ordering::Relaxed), 6);
        assert_eq!(c.stats().bulk_jobs.load(Ordering::Relaxed), 2);
        assert_eq!(c.stats().slices.load(Ordering::Relaxed), 3);
        c.shutdown();
    }

    /// A job queued while a slice is written goes next, in a group of its
    /// own, not with the next slice: it waits for one slice, not two.
    #[test]
    fn a_job_queued_behind_a_slice_goes_next_on_its_own() {
        let (engine, s) = mem_store();
        let mut c = Committer::start(s.clone(), 100);
        let (tx, rx) = mpsc::channel();
        let big_tx = tx.clone();
        // Every write takes a while, so the small job arrives during the
        // first slice's.
        engine.delay_writes(std::time::Duration::from_millis(300));
        let large = versions(1, 2 * SLICE_UPDATES + 10);
        c.submit(large, vec![], Box::new(move |r| big_tx.send(("large", r)).unwrap())).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        engine.delay_writes(std::time::Duration::ZERO);
        c.submit(vec![upd(5, 1)], vec![], Box::new(move |r| tx.send(("small", r)).unwrap())).unwrap();
        let (first, small) = rx.recv().unwrap();
        let (second, large) = rx.recv().unwrap();
        assert_eq!((first, second), ("small", "large"));
        let seq = |o: &Outcome| match o {
            Outcome::Applied { seq } => *seq,
            other => panic!("{other:?}"),
        };
        let (small, large) = (small.unwrap(), large.unwrap());
        let between = seq(&small.outcomes[0]);
        assert_eq!(between, seq(&large.outcomes[SLICE_UPDATES - 1]) + 1, "right after the first slice");
        assert_eq!(seq(&large.outcomes[SLICE_UPDATES]), between + 1, "and before the second");
        assert_eq!(c.stats().groups.load(Ordering::Relaxed), 4, "three slices and the small job alone");
        c.shutdown();
    }

    /// Many submissions queued at once are written a few at a time: a
    /// group stops growing at [`MAX_GROUP_UPDATES`], so no job waits
    /// behind all of them.
    #[test]
    fn a_group_stops_growing_at_its_updates() {
        let (s, mut c, release) = held();
        let (tx, rx) = mpsc::channel();
        for i in 0..10u16 {
            let tx = tx.clone();
            let job = versions(i, 1000);
            c.submit(job, vec![], Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
        }
        drop(release);
        assert!((0..10).all(|_| rx.recv().unwrap()));
        // The holder, then 5 jobs (5,000 updates: past 4,096 with the
        // fifth), then the other 5.
        assert_eq!(c.stats().groups.load(Ordering::Relaxed), 3);
        assert_eq!(c.stats().largest_group.load(Ordering::Relaxed), 5000);
        assert_eq!(s.get(&key(9), "death", None).unwrap().unwrap().version, 1000);
        c.shutdown();
    }

    /// A slice the store refuses answers its job with the error; the
    /// slices before it stay written, the ones after it are never written,
    /// and the writer goes on.
    #[test]
    fn a_failed_slice_answers_its_job_and_writes_no_more_of_it() {
        let (s, mut c, release) = held();
        let mut large = versions(1, SLICE_UPDATES);
        large.extend(versions(2, SLICE_UPDATES + 10));
        large[SLICE_UPDATES + 5].dataset = "no-such-dataset".into();
        let (tx, rx) = mpsc::channel();
        c.submit(large, vec![event(1)], Box::new(move |r| tx.send(r.map(|_| ()).map_err(|e| e.to_string())).unwrap())).unwrap();
        drop(release);
        let r = rx.recv().unwrap();
        assert!(r.as_ref().is_err_and(|e| e.contains("no-such-dataset")), "{r:?}");
        assert_eq!(s.get(&key(1), "death", None).unwrap().unwrap().version, SLICE_UPDATES as u64, "the first slice stays");
        assert!(s.get(&key(2), "death", None).unwrap().is_none(), "the failed slice and the one after it are not written");
        assert_eq!(s.audit_verify().unwrap().entries, 1, "the job's entry, with its first slice");
        let (tx, rx) = mpsc::channel();
        c.submit(vec![upd(3, 1)], vec![], Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
        assert!(rx.recv().unwrap(), "the writer goes on");
        c.shutdown();
    }

    #[test]
    fn a_slice_ends_at_its_count_or_its_bytes_and_a_chain_is_never_sliced() {
        let photo = |i: u16, mb: usize| Update {
            op: UpdateOp::Upsert(vec![("photo".into(), Value::Bytes(vec![0; mb << 20]))]),
            ..upd(i, 1)
        };
        assert_eq!(slice_len(&[]), 0);
        assert_eq!(slice_len(&(0..10).map(|i| upd(i, 1)).collect::<Vec<_>>()), 10);
        assert_eq!(slice_len(&(0..SLICE_UPDATES as u64 + 1).map(|v| upd(1, v)).collect::<Vec<_>>()), SLICE_UPDATES);
        // 1 MiB each (and a few bytes more): three fit in 4 MiB, the
        // fourth would pass it.
        assert_eq!(slice_len(&(0..6).map(|i| photo(i, 1)).collect::<Vec<_>>()), 3);
        // One record larger than a slice is a slice of its own.
        assert_eq!(slice_len(&[photo(1, 5), photo(2, 1)]), 1);
        let job = |guard: Option<Arc<AtomicBool>>| Job {
            updates: (0..6).map(|i| photo(i, 1)).collect(),
            events: vec![],
            uses: vec![],
            extra: WriteBatch::new(),
            reply: Box::new(|_| {}),
            guard,
            batch: false,
            journaled: false,
        };
        assert!(sliced(&job(None)));
        assert!(!sliced(&job(Some(Arc::new(AtomicBool::new(false))))));
    }

    /// A panic while a failed group is tried again job by job answers the
    /// jobs not yet tried as well, instead of dropping their replies.
    #[test]
    fn a_panic_while_retrying_a_group_answers_every_job_of_it() {
        let (engine, s) = mem_store();
        let mut c = Committer::start(s.clone(), 100);
        let release = hold_writer(&c);
        let (tx, rx) = mpsc::channel();
        for (i, u) in [(1, upd(1, 1)), (2, Update { dataset: "no-such-dataset".into(), ..upd(2, 1) }), (3, upd(3, 1))] {
            let tx = tx.clone();
            c.submit(vec![u], vec![], Box::new(move |r| tx.send((i, r.map(|_| ()).map_err(|e| e.to_string()))).unwrap())).unwrap();
        }
        // The group is refused before it reaches the engine (an unknown
        // dataset); the first job tried alone then panics there.
        engine.panic_next_write();
        drop(release);
        let mut got: Vec<(u16, Result<(), String>)> =
            (0..3).map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).expect("every job answered")).collect();
        got.sort_by_key(|(i, _)| *i);
        assert!(got.iter().all(|(_, r)| r.as_ref().is_err_and(|e| e.contains("panicked"))), "{got:?}");
        c.shutdown();
    }

    /// A full disk fails the job with a reason the caller may pass on (to
    /// try again later), unlike other engine failures; once space is freed
    /// the writer goes on writing.
    #[test]
    fn a_full_disk_fails_a_job_with_a_reason_to_retry_and_passes() {
        let (engine, s) = mem_store();
        let mut c = Committer::start(s.clone(), 100);
        let commit = |c: &Committer, i: u16| {
            let (tx, rx) = mpsc::channel();
            c.submit(vec![upd(i, 1)], vec![event(i)], Box::new(move |r| tx.send(r.map(|_| ())).unwrap())).unwrap();
            rx.recv().unwrap()
        };
        engine.fail_writes(Some("IO error: No space left on device: While appending to file: /data/000004.log: No space left on device"));
        let e = commit(&c, 1).unwrap_err();
        assert!(matches!(*e, Error::NoSpace(_)), "{e:?}");
        assert_eq!(e.unavailable_reason(), Some(crate::NO_SPACE));
        engine.fail_writes(Some("Corruption: block checksum mismatch"));
        let e = commit(&c, 2).unwrap_err();
        assert_eq!(e.unavailable_reason(), None, "any other failure is the server's: {e:?}");
        let io = Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(io.unavailable_reason(), Some(crate::NO_SPACE));
        engine.fail_writes(None);
        assert!(commit(&c, 3).is_ok());
        assert!(s.get(&key(1), "death", None).unwrap().is_none() && s.get(&key(3), "death", None).unwrap().is_some());
        c.shutdown();
    }

    /// What a use case's caller is told of a failed commit: shed load, try
    /// again later (a full disk, a stopping server), or an internal fault
    /// with its cause for the log.
    #[test]
    fn a_failed_commit_tells_its_caller_to_retry_or_that_it_is_a_fault() {
        let full = Error::engine("IO error: No space left on device".into());
        let corrupt = Error::engine("Corruption: block checksum mismatch".into());
        let cases = [
            (CommitError::Overloaded, crate::Failure::Overloaded),
            (CommitError::Closed, crate::Failure::Unavailable("the server is shutting down".into())),
            (CommitError::Failed(Arc::new(full)), crate::Failure::Unavailable(crate::NO_SPACE.into())),
        ];
        for (e, want) in cases {
            assert_eq!(crate::Failure::from(e), want);
        }
        match crate::Failure::from(CommitError::Failed(Arc::new(corrupt))) {
            crate::Failure::Internal(msg) => assert!(msg.contains("block checksum mismatch"), "{msg}"),
            other => panic!("a corrupt block is the server's fault, not {other:?}"),
        }
    }

    /// A reply that panics costs its caller, not the writer.
    #[test]
    fn a_reply_that_panics_does_not_stop_the_writer() {
        let s = store();
        let c = Committer::start(s.clone(), 100);
        c.submit(vec![upd(1, 1)], vec![], Box::new(|_| panic!("a caller's bug"))).unwrap();
        let (tx, rx) = mpsc::channel();
        c.submit(vec![upd(2, 1)], vec![], Box::new(move |r| tx.send(r.is_ok()).unwrap())).unwrap();
        assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap());
        assert_eq!(s.last_seq(), 2);
    }

    /// A panic inside the store answers its group and every later job
    /// with an error (the store's state in memory can no longer be
    /// trusted), instead of leaving them waiting on a dead thread.
    #[test]
    fn a_panic_in_the_store_is_answered_and_every_later_job_refused() {
        let (engine, s) = mem_store();
        let mut c = Committer::start(s.clone(), 100);
        let (tx, rx) = mpsc::channel();
        let send = |i: u16| {
            let tx = tx.clone();
            c.submit(vec![upd(i, 1)], vec![], Box::new(move |r| tx.send((i, r.map(|_| ()).map_err(|e| e.to_string()))).unwrap())).unwrap();
        };
        send(0);
        assert!(rx.recv().unwrap().1.is_ok());
        engine.panic_next_write();
        send(1);
        let (_, r) = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("answered, not left waiting");
        assert!(r.is_err_and(|e| e.contains("panicked")));
        for i in 2..5 {
            send(i);
            let (_, r) = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("answered, not left waiting");
            assert!(r.is_err_and(|e| e.contains("restart")));
        }
        assert_eq!(s.last_seq(), 1, "nothing written after the panic");
        c.shutdown();
    }
}
