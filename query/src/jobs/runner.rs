//! The runner of batch comparison jobs: long batches whose input was
//! stored as it arrived (`super::queue`) run in the background, one job at
//! a time, chunk after chunk, across restarts.
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
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often the runner looks for work without being woken.
const IDLE_RESCAN: Duration = Duration::from_secs(30);
/// Pause before retrying a job whose chunk could not be queued for writing.
const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Runs queued jobs forever, oldest first; the one found running after a
/// restart goes first. Woken when a job is queued.
pub async fn runner(state: Arc<Queries>) {
    let started = state.store.clock().now_micros();
    loop {
        match next_job(&state.store, started, state.job_retention).await {
            Ok(Some(meta)) => run_job(&state, meta).await,
            Ok(None) => {
                tokio::select! {
                    _ = state.job_wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_RESCAN) => {}
                }
            }
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

/// The job to run next, after discarding jobs whose input stopped
/// arriving before this process started (their submitter got no id) and
/// finished jobs kept for `retention` (their lines' audit entries stay:
/// they are the record; the stored answers are only a convenience).
async fn next_job(store: &Arc<Store>, started: i64, retention: Duration) -> Result<Option<JobMeta>, BatchError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let engine = &**store.engine();
        let all = jobs::all(engine)?;
        let now = store.clock().now_micros();
        let mut discard = WriteBatch::new();
        for m in all.iter().filter(|m| m.state == JobState::Receiving && m.created_at < started) {
            tracing::info!(job = %m.id.to_hex(), "discarding a job whose input never completed");
            jobs::delete_into(engine, &m.id, &mut discard)?;
        }
        for m in all.iter().filter(|m| expired(m, now, retention)) {
            tracing::info!(job = %m.id.to_hex(), department = %m.department, "deleting a finished job past its retention");
            jobs::delete_into(engine, &m.id, &mut discard)?;
        }
        if !discard.is_empty() {
            engine.write(discard, Durability::Sync)?;
        }
        let running = all.iter().find(|m| m.state == JobState::Running);
        Ok(running.or_else(|| all.iter().find(|m| m.state == JobState::Queued)).cloned())
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

async fn run_job(state: &Queries, mut meta: JobMeta) {
    let id = meta.id.to_hex();
    let Some(department) = state.directory.department(&meta.department) else {
        fail(state, meta, "the submitting department is no longer configured").await;
        return;
    };
    let batch = Batch {
        store: state.store.clone(),
        committer: state.committer.clone(),
        requester: Arc::new(Requester {
            caller: Caller::declared(department, meta.operator.clone()),
            purpose: meta.purpose.clone(),
        }),
    };
    if meta.state == JobState::Queued {
        meta.state = JobState::Running;
        if let Err(e) = write_meta(&state.store, &meta).await {
            tracing::error!(job = %id, error = %e, "cannot start a batch job");
            tokio::time::sleep(RETRY_PAUSE).await;
            return;
        }
    }
    tracing::info!(job = %id, total = meta.total, from_chunk = meta.done_chunks, "running batch job");
    match drive(&batch, &mut meta).await {
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
    }
}

/// Runs the remaining chunks of `meta`'s job: chunks are verified while
/// earlier ones commit (up to [`IN_FLIGHT`] in flight). The committer keeps
/// their order, so after a crash the stored progress is always a prefix
/// of chunks whose answers are stored with it.
async fn drive(b: &Batch, meta: &mut JobMeta) -> Result<(), BatchError> {
    if meta.done_chunks >= meta.chunks {
        // Nothing (left) to verify: record the job as done.
        let mut m = meta.clone();
        m.state = JobState::Done;
        m.finished_at = Some(b.store.clock().now_micros());
        let mut extra = WriteBatch::new();
        jobs::put_meta(&mut extra, &m);
        durable(b.submit(Vec::new(), extra).await?).await?;
        *meta = m;
        return Ok(());
    }
    let (tx, mut rx) = mpsc::channel::<(oneshot::Receiver<JobResult>, JobMeta)>(IN_FLIGHT);
    let mut m = meta.clone();
    let produce = async move {
        // Chunks being read and verified, several at once, in order.
        let mut running: VecDeque<VerifyTask> = VecDeque::new();
        let mut next = m.done_chunks;
        let max = verifiers();
        loop {
            while running.len() < max && next < m.chunks {
                let (store, req, id, n) = (b.store.clone(), b.requester.clone(), m.id, next);
                running.push_back(tokio::task::spawn_blocking(move || {
                    let chunk = jobs::input(&**store.engine(), &id, n)?.ok_or_else(|| basedata_store::Error::Corrupt {
                        what: "job input",
                        msg: format!("chunk {n} is missing"),
                    })?;
                    verify_now(&store, &req, &chunk)
                }));
                next += 1;
            }
            let Some(task) = running.pop_front() else { break };
            let Verified { result, events } = task.await??;
            let n = m.done_chunks;
            m.counts.add(&result.counts);
            m.done_chunks = n + 1;
            if m.done_chunks == m.chunks {
                m.state = JobState::Done;
                m.finished_at = Some(b.store.clock().now_micros());
            }
            let mut extra = WriteBatch::new();
            jobs::put_output(&mut extra, &m.id, n, &result.out);
            jobs::put_meta(&mut extra, &m);
            let done = b.submit(events, extra).await?;
            if let Err(mpsc::error::SendError((done, _))) = tx.send((done, m.clone())).await {
                // A commit failed: let this one land (or fail) before the
                // job's outcome is recorded, so it cannot overwrite it.
                let _ = durable(done).await;
                break;
            }
        }
        Ok::<_, BatchError>(())
    };
    let release = async {
        let mut failed = None;
        while let Some((done, m)) = rx.recv().await {
            match durable(done).await {
                Ok(_) if failed.is_none() => *meta = m,
                Ok(_) => {}
                Err(e) => {
                    // Let what is already queued finish first, so nothing
                    // written after this point can overwrite the outcome.
                    rx.close();
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    };
    let (produced, released) = tokio::join!(produce, release);
    released?;
    produced
}
