//! The runner of batch comparison jobs: long batches whose input was
//! stored as it arrived (`super::queue`) run in the background, chunk
//! after chunk, across restarts.
//!
//! Fairness: the runner works in slices of [`SLICE_CHUNKS`] chunks and
//! takes turns ([`Turns`]): departments with unfinished jobs in turn, and
//! within a department its jobs in turn. So one department's job of a
//! million lines delays another's one-line job by a slice per department,
//! not by the whole job.
//!
//! Guarantee: a chunk's answers, the job's progress and the chunk's audit
//! entries are written in one atomic, synced batch (the group committer's
//! extra writes). After a crash the job resumes at the first chunk not so
//! written, so every line is answered exactly once and audited exactly
//! once. A job's input is synced before its `202`; a job whose input never
//! finished arriving was never acknowledged and is discarded at restart.

use crate::batch::pipeline::{durable, verifiers, verify_now, Batch, BatchError, Requester, Verified, VerifyTask, IN_FLIGHT};
use crate::caller::Caller;
use crate::jobs::{self, JobMeta, JobState};
use crate::service::Queries;
use basedata_store::commit::JobResult;
use basedata_store::{Durability, Store, WriteBatch};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often the runner looks for work without being woken.
const IDLE_RESCAN: Duration = Duration::from_secs(30);
/// Pause before retrying a job whose chunk could not be queued for writing.
const RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Chunks of a job run in one turn: with [`crate::batch::CHUNK_LINES`]
/// lines each, about 16,000 lines, a fraction of a second; long enough to
/// keep the verifiers and the committer busy, short enough that a waiting
/// department's turn comes soon.
pub const SLICE_CHUNKS: u64 = 8;

/// Discards the jobs whose input stopped arriving in an earlier process
/// (their submitter got no id; they would count against their department
/// until then): every job still receiving, so call it before the server
/// accepts requests. Decided by the moment it runs, not by the jobs'
/// times, which a clock set back would make look newer than the start.
/// Returns how many.
pub fn discard_leftover_uploads(store: &Store) -> Result<usize, BatchError> {
    let engine = &**store.engine();
    let mut discard = WriteBatch::new();
    let mut n = 0;
    for m in jobs::all(engine)?.iter().filter(|m| m.state == JobState::Receiving) {
        tracing::info!(job = %m.id.to_hex(), "discarding a job whose input never completed");
        jobs::delete_into(engine, &m.id, &mut discard)?;
        n += 1;
    }
    if !discard.is_empty() {
        engine.write(discard, Durability::Sync)?;
    }
    Ok(n)
}

/// Runs unfinished jobs forever, a slice at a time, taking turns by
/// department and job. Woken when a job is queued.
pub async fn runner(state: Arc<Queries>) {
    let mut turns = Turns::default();
    loop {
        match unfinished(&state.store, state.job_retention).await {
            Ok(jobs) => match turns.next(&jobs) {
                Some(meta) => run_slice(&state, meta.clone()).await,
                None => {
                    tokio::select! {
                        _ = state.job_wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_RESCAN) => {}
                    }
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot list batch jobs");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Whether a finished job's input and answers have been kept for
/// `retention` by `now` (Unix microseconds).
pub fn expired(m: &JobMeta, now: i64, retention: Duration) -> bool {
    let kept = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    matches!(m.state, JobState::Done | JobState::Failed)
        && m.finished_at.is_some_and(|at| now.saturating_sub(at) >= kept)
}

/// Whose turn it is. Departments take turns in the order of their ids,
/// and a department's jobs in the order they were submitted; each turn
/// goes to the next one after the last served that still has work.
#[derive(Debug, Default)]
pub struct Turns {
    last_department: Option<String>,
    /// Per department, the (submission time, id) of the job served last.
    last_job: HashMap<String, (i64, [u8; 16])>,
}

impl Turns {
    /// The job whose turn it is among `jobs` (unfinished, oldest first).
    pub fn next<'a>(&mut self, jobs: &'a [JobMeta]) -> Option<&'a JobMeta> {
        let mut departments: Vec<&str> = jobs.iter().map(|m| m.department.as_str()).collect();
        departments.sort_unstable();
        departments.dedup();
        let after = |d: &&&str| self.last_department.as_deref().is_some_and(|last| **d > last);
        let department = *departments.iter().find(after).or(departments.first())?;
        let theirs: Vec<&JobMeta> = jobs.iter().filter(|m| m.department == department).collect();
        let last = self.last_job.get(department);
        let later = |m: &&&JobMeta| last.is_some_and(|l| (m.created_at, m.id.0) > *l);
        let job = *theirs.iter().find(later).or(theirs.first())?;
        self.last_department = Some(department.to_owned());
        self.last_job.insert(department.to_owned(), (job.created_at, job.id.0));
        Some(job)
    }
}

/// The jobs to run (queued or running, oldest first), after deleting
/// finished jobs kept for `retention` (their lines' audit entries stay:
/// they are the record; the stored answers are only a convenience).
async fn unfinished(store: &Arc<Store>, retention: Duration) -> Result<Vec<JobMeta>, BatchError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let engine = &**store.engine();
        let all = jobs::all(engine)?;
        let now = store.clock().now_micros();
        let mut discard = WriteBatch::new();
        for m in all.iter().filter(|m| expired(m, now, retention)) {
            tracing::info!(job = %m.id.to_hex(), department = %m.department, "deleting a finished job past its retention");
            jobs::delete_into(engine, &m.id, &mut discard)?;
        }
        if !discard.is_empty() {
            engine.write(discard, Durability::Sync)?;
        }
        Ok(all.into_iter().filter(|m| matches!(m.state, JobState::Queued | JobState::Running)).collect())
    })
    .await?
}

async fn write_meta(store: &Arc<Store>, meta: &JobMeta) -> Result<(), BatchError> {
    let store = store.clone();
    let mut b = WriteBatch::new();
    jobs::put_meta(&mut b, meta);
    tokio::task::spawn_blocking(move || store.engine().write(b, Durability::Sync)).await??;
    Ok(())
}

/// Runs the next slice of `meta`'s job.
async fn run_slice(state: &Queries, mut meta: JobMeta) {
    let id = meta.id.to_hex();
    let Some(department) = state.directory.department(&meta.department) else {
        fail(state, meta, "the submitting department is no longer configured").await;
        return;
    };
    let mut caller = Caller::declared(department, meta.operator.clone());
    // Admitted at submission; the department's purposes may have changed
    // since (a restart with another configuration).
    match state.purpose_code(&caller, &meta.purpose) {
        Ok(code) => caller.purpose_code = code,
        Err(_) => {
            fail(state, meta, "the job's purpose is no longer one its department may state").await;
            return;
        }
    }
    let batch = Batch {
        store: state.store.clone(),
        committer: state.committer.clone(),
        requester: Arc::new(Requester {
            caller,
            purpose: meta.purpose.clone(),
            grants: state.grants.clone(),
        }),
    };
    if meta.state == JobState::Queued {
        meta.state = JobState::Running;
        if let Err(e) = write_meta(&state.store, &meta).await {
            tracing::error!(job = %id, error = %e, "cannot start a batch job");
            tokio::time::sleep(RETRY_PAUSE).await;
            return;
        }
        tracing::info!(job = %id, department = %meta.department, total = meta.total, "running batch job");
    }
    match drive(&batch, &mut meta, SLICE_CHUNKS).await {
        Ok(()) if meta.state != JobState::Done => {}
        Ok(()) => tracing::info!(
            job = %id,
            total = meta.total,
            matched = meta.counts.matched,
            mismatched = meta.counts.mismatched,
            not_found = meta.counts.not_found,
            invalid = meta.counts.invalid,
            "batch job done"
        ),
        // Shutting down: the job resumes at the next start.
        Err(BatchError::Closed) => std::future::pending::<()>().await,
        Err(BatchError::Overloaded) => {
            tracing::warn!(job = %id, "the write queue stayed full; the job will continue shortly");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        // The machine's state (a full disk), not the job's: it goes on
        // from its stored progress once the store takes writes again,
        // rather than failing for good and making its department send
        // the whole body again. (`drive` reports a failure after which a
        // later chunk was stored as a worker's: that job fails.)
        Err(BatchError::Store(e)) if e.unavailable_reason().is_some() => {
            tracing::warn!(job = %id, error = %e, "the store refuses writes; the job will continue once it takes them again");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(e) => {
            tracing::error!(job = %id, error = %e, "batch job failed");
            fail(state, meta, "an internal error stopped the job; the incident has been logged").await;
        }
    }
}

/// Marks a job failed; its answers so far stay unreadable.
async fn fail(state: &Queries, mut meta: JobMeta, why: &str) {
    meta.state = JobState::Failed;
    meta.error = Some(why.to_owned());
    meta.finished_at = Some(state.store.clock().now_micros());
    if let Err(e) = write_meta(&state.store, &meta).await {
        tracing::error!(job = %meta.id.to_hex(), error = %e, "cannot record a failed job");
        // Still running as stored: the runner would take it up again at
        // once, and fail again, in a loop as fast as the store refuses.
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Runs up to `slice` of the remaining chunks of `meta`'s job: chunks are
/// verified while earlier ones commit (up to [`IN_FLIGHT`] in flight). The
/// committer keeps their order, so after a crash the stored progress is
/// always a prefix of chunks whose answers are stored with it.
async fn drive(b: &Batch, meta: &mut JobMeta, slice: u64) -> Result<(), BatchError> {
    if meta.done_chunks >= meta.chunks {
        // Nothing (left) to verify: record the job as done.
        let mut m = meta.clone();
        m.state = JobState::Done;
        m.finished_at = Some(b.store.clock().now_micros());
        let mut extra = WriteBatch::new();
        jobs::put_meta(&mut extra, &m);
        durable(b.submit(Default::default(), extra).await?).await?;
        *meta = m;
        return Ok(());
    }
    let (tx, mut rx) = mpsc::channel::<(oneshot::Receiver<JobResult>, JobMeta)>(IN_FLIGHT);
    let mut m = meta.clone();
    let produce = async move {
        // Chunks being read and verified, several at once, in order.
        let mut running: VecDeque<VerifyTask> = VecDeque::new();
        let mut next = m.done_chunks;
        let end = m.chunks.min(m.done_chunks.saturating_add(slice.max(1)));
        let max = verifiers();
        loop {
            while running.len() < max && next < end {
                let (store, req, id, n) = (b.store.clone(), b.requester.clone(), m.id, next);
                running.push_back(crate::batch::background::run(move || {
                    let chunk = jobs::input(&store, &id, n)?.ok_or_else(|| basedata_store::Error::Corrupt {
                        what: "job input",
                        msg: format!("chunk {n} is missing"),
                    })?;
                    verify_now(&store, &req, &chunk)
                }));
                next += 1;
            }
            let Some(task) = running.pop_front() else { break };
            let Verified { result, uses } = task.await??;
            let n = m.done_chunks;
            m.counts.add(&result.counts);
            m.done_chunks = n + 1;
            if m.done_chunks == m.chunks {
                m.state = JobState::Done;
                m.finished_at = Some(b.store.clock().now_micros());
            }
            let mut extra = WriteBatch::new();
            jobs::put_output(&b.store, &mut extra, &m.id, n, &result.out)?;
            jobs::put_meta(&mut extra, &m);
            let done = b.submit(uses, extra).await?;
            if let Err(mpsc::error::SendError((done, _))) = tx.send((done, m.clone())).await {
                // A commit failed: let this one land (or fail) before the
                // job's outcome is recorded, so it cannot overwrite it.
                return Ok(durable(done).await.is_ok());
            }
        }
        // Whether a chunk was stored after one that failed.
        Ok::<_, BatchError>(false)
    };
    let release = async {
        let mut failed = None;
        let mut landed_after = false;
        while let Some((done, m)) = rx.recv().await {
            match durable(done).await {
                Ok(_) if failed.is_none() => *meta = m,
                Ok(_) => landed_after = true,
                Err(e) => {
                    // Let what is already queued finish first, so nothing
                    // written after this point can overwrite the outcome.
                    rx.close();
                    failed.get_or_insert(e);
                }
            }
        }
        (failed.map_or(Ok(()), Err), landed_after)
    };
    let (produced, (released, landed_after)) = tokio::join!(produce, release);
    match released {
        // A chunk stored after one that failed stored its progress past
        // the failed one's: resumed, the job would skip it. Only a job
        // whose failure left its stored progress whole may wait and go on.
        Err(BatchError::Store(_)) if landed_after || matches!(produced, Ok(true)) => Err(BatchError::Worker(
            "a chunk was stored after an earlier one failed; the job cannot resume from its progress".into(),
        )),
        Err(e) => Err(e),
        Ok(()) => produced.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobId;

    fn job(department: &str, created_at: i64) -> JobMeta {
        JobMeta {
            id: JobId([created_at as u8; 16]),
            department: department.into(),
            operator: None,
            purpose: "p".into(),
            state: JobState::Queued,
            created_at,
            finished_at: None,
            total: 1,
            chunks: 1,
            done_chunks: 0,
            counts: Default::default(),
            error: None,
        }
    }

    fn turns(t: &mut Turns, jobs: &[JobMeta], n: usize) -> Vec<(String, i64)> {
        (0..n).map(|_| t.next(jobs).map(|m| (m.department.clone(), m.created_at)).unwrap()).collect()
    }

    fn pairs(p: &[(&str, i64)]) -> Vec<(String, i64)> {
        p.iter().map(|(d, t)| (d.to_string(), *t)).collect()
    }

    #[test]
    fn departments_take_turns_and_so_do_their_jobs() {
        let mut t = Turns::default();
        assert!(t.next(&[]).is_none());
        // b submitted two jobs before a's one and c's one: still a, b, c in turn.
        let jobs = [job("b", 1), job("b", 2), job("a", 3), job("c", 4)];
        assert_eq!(
            turns(&mut t, &jobs, 6),
            pairs(&[("a", 3), ("b", 1), ("c", 4), ("a", 3), ("b", 2), ("c", 4)])
        );
        // a's job finished and d arrived: the turn goes on from c.
        let jobs = [job("b", 1), job("b", 2), job("c", 4), job("d", 5)];
        assert_eq!(turns(&mut t, &jobs, 4), pairs(&[("d", 5), ("b", 1), ("c", 4), ("d", 5)]));
        // A job newer than the last served is served next in its department.
        let jobs = [job("b", 1), job("b", 2), job("b", 7)];
        assert_eq!(turns(&mut t, &jobs, 4), pairs(&[("b", 2), ("b", 7), ("b", 1), ("b", 2)]));
    }

    /// One department's long job delays another's short one by a slice,
    /// not by the whole job.
    #[test]
    fn a_short_job_is_served_after_one_slice_of_a_long_one() {
        let mut t = Turns::default();
        let long = job("a", 1);
        assert_eq!(t.next(std::slice::from_ref(&long)).unwrap().department, "a");
        // The short job arrives while the long one's first slice runs.
        let both = [long.clone(), job("b", 2)];
        assert_eq!(t.next(&both).unwrap().department, "b");
        assert_eq!(t.next(std::slice::from_ref(&long)).unwrap().department, "a");
    }
}
