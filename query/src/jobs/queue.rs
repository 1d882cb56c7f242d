//! The job use cases of a consumer: submit a long batch comparison (its
//! input stored as it arrives, acknowledged once synced), follow it, and
//! download its answers (itself an audited use). Only the submitting
//! department sees a job; to anyone else it is as absent as a missing one.
//!
//! Submissions are bounded per department ([`JobLimits`]): a body over the
//! byte or line limit is refused (`payload_too_large`) and what was stored
//! of it is deleted; a department with its limit of jobs unfinished is
//! refused a new one ([`Error::TooManyJobs`]) before anything is stored.

use super::{JobId, JobMeta, JobState};
use crate::batch::{Chunk, Cutter};
use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::service::Queries;
use basedata_store::{Action, Durability, Store, WriteBatch};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why a submission's input did not arrive whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokenInput;

/// What one department may submit as jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobLimits {
    /// Largest request body of one job, in bytes.
    pub max_bytes: u64,
    /// Most request lines of one job.
    pub max_lines: u64,
    /// Jobs of the department unfinished at once (being received, queued
    /// or running).
    pub max_jobs: u32,
}

impl Default for JobLimits {
    /// Safe for any department: a job of up to a million lines (about 100
    /// MB of typical claims) and four unfinished at once.
    fn default() -> Self {
        JobLimits { max_bytes: 256 << 20, max_lines: 1_000_000, max_jobs: 4 }
    }
}

/// How long a department refused for having too many unfinished jobs is
/// asked to wait: about what a job of the default size takes.
pub const JOB_RETRY_AFTER_SECS: u64 = 30;

impl Queries {
    /// Refuses a job before its body is read, where the length the client
    /// declared is over the department's limit or the department has as
    /// many unfinished jobs as it may: a client that asked for
    /// `100 Continue` then learns of it before it sends its lines.
    /// [`Queries::submit_job`] judges both again as the job is taken.
    pub async fn job_refused_early(&self, caller: &Caller, limits: JobLimits, declared_len: Option<u64>) -> Result<()> {
        if declared_len.is_some_and(|n| n > limits.max_bytes) {
            return Err(too_many_bytes(limits));
        }
        if unfinished_jobs(&self.store, &caller.department.id).await? >= u64::from(limits.max_jobs) {
            return Err(Error::TooManyJobs { limit: limits.max_jobs, retry_after_secs: JOB_RETRY_AFTER_SECS });
        }
        Ok(())
    }

    /// Stores a job's input as `body` delivers it (the raw request body in
    /// pieces of any size), cut into chunks, then queues the job.
    /// `declared_len` is the body length the client announced, if any: a
    /// body announced over the limit is refused before it is read.
    /// `input` reports whether the body arrived whole; if not, or if it
    /// passes a limit, what was stored is discarded. Returns once the
    /// whole input is synced.
    pub async fn submit_job<B: AsRef<[u8]>>(
        &self,
        caller: &Caller,
        purpose: &str,
        limits: JobLimits,
        declared_len: Option<u64>,
        mut body: mpsc::Receiver<B>,
        input: impl std::future::Future<Output = Result<(), BrokenInput>>,
    ) -> Result<JobMeta> {
        if declared_len.is_some_and(|n| n > limits.max_bytes) {
            return Err(too_many_bytes(limits));
        }
        let id = JobId::random()?;
        let mut meta =
            JobMeta::receiving(id, &caller.department.id, caller.operator.clone(), purpose, self.store.clock().now_micros());
        {
            // Counted and recorded under one lock: two submissions of a
            // department at its limit cannot both pass.
            // The lock is let go only once the job is stored, even if the
            // request is given up meanwhile: the next count must see it.
            let admission = self.job_admission.clone().lock_owned().await;
            let unfinished = unfinished_jobs(&self.store, &meta.department).await?;
            if unfinished >= u64::from(limits.max_jobs) {
                return Err(Error::TooManyJobs { limit: limits.max_jobs, retry_after_secs: JOB_RETRY_AFTER_SECS });
            }
            let mut b = WriteBatch::new();
            super::put_meta(&mut b, &meta);
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                let written = store.engine().write(b, Durability::Buffered);
                drop(admission);
                written
            })
            .await??;
        }
        let (mut cutter, mut ready, mut bytes) = (Cutter::new(), Vec::new(), 0u64);
        let received = async {
            while let Some(piece) = body.recv().await {
                let piece = piece.as_ref();
                bytes += piece.len() as u64;
                if bytes > limits.max_bytes {
                    return Err(too_many_bytes(limits));
                }
                cutter.push(piece, &mut ready);
                if cutter.lines() > limits.max_lines {
                    return Err(too_many_lines(limits));
                }
                for chunk in ready.drain(..) {
                    self.store_chunk(&mut meta, &chunk).await?;
                }
            }
            if input.await.is_err() {
                return Err(Error::InvalidBody("the request body could not be read to its end".into()));
            }
            if let Some(last) = cutter.finish() {
                if last.first_line + u64::from(last.lines) - 1 > limits.max_lines {
                    return Err(too_many_lines(limits));
                }
                self.store_chunk(&mut meta, &last).await?;
            }
            Ok(())
        };
        if let Err(e) = received.await {
            discard(&self.store, id).await;
            return Err(e);
        }
        meta.state = JobState::Queued;
        let mut b = WriteBatch::new();
        super::put_meta(&mut b, &meta);
        if let Err(e) = write(&self.store, b, Durability::Sync).await {
            // Never acknowledged: left receiving, it would count against
            // the department until the next start.
            discard(&self.store, id).await;
            return Err(e);
        }
        self.job_wake.notify_one();
        tracing::info!(job = %id.to_hex(), department = %meta.department, lines = meta.total, "batch job queued");
        Ok(meta)
    }

    /// Stores the next input chunk of `meta`'s job (sealed: its lines hold
    /// ID numbers), unsynced: the synced write that queues the job covers
    /// every earlier one.
    async fn store_chunk(&self, meta: &mut JobMeta, chunk: &Chunk) -> Result<()> {
        meta.total = chunk.first_line + u64::from(chunk.lines) - 1;
        let mut b = WriteBatch::new();
        super::put_input(&self.store, &mut b, &meta.id, meta.chunks, chunk)?;
        write(&self.store, b, Durability::Buffered).await?;
        meta.chunks += 1;
        Ok(())
    }

    /// The caller's job `id`.
    pub async fn job(&self, caller: &Caller, id: &str) -> Result<JobMeta> {
        let missing = || Error::NotFound("no such job".into());
        let id = JobId::parse(id).ok_or_else(missing)?;
        let store = self.store.clone();
        let meta = tokio::task::spawn_blocking(move || super::meta(&**store.engine(), &id)).await??;
        meta.filter(|m| m.department == caller.department.id && m.state != JobState::Receiving).ok_or_else(missing)
    }

    /// Opens the answers of the caller's finished job `id` for download,
    /// or says how far the job is when it is not done yet. Every line was
    /// audited when it was verified; the download is a use of its own (who
    /// took the verdicts, when, and why), recorded before the first byte
    /// goes out.
    pub async fn job_result(&self, caller: &Caller, purpose: &str, id: &str) -> Result<Download> {
        let meta = self.job(caller, id).await?;
        match meta.state {
            JobState::Done => {}
            JobState::Failed => return Err(Error::Conflict("the job failed; it has no result".into())),
            _ => return Ok(Download::NotDone(meta)),
        }
        let mut ev = caller.event(purpose, Action::BatchVerify, None);
        ev.outcome = format!("result_download:{}", meta.id.to_hex());
        self.record(vec![ev], WriteBatch::new()).await?;
        Ok(Download::Ready(JobResult { store: self.store.clone(), meta }))
    }
}

/// A job's answers, or where the job stands while they are not ready.
#[derive(Debug)]
pub enum Download {
    Ready(JobResult),
    NotDone(JobMeta),
}

/// A finished job's answers, chunk by chunk.
#[derive(Debug)]
pub struct JobResult {
    store: Arc<Store>,
    pub meta: JobMeta,
}

impl JobResult {
    /// The answer lines of chunk `n` (NDJSON bytes), read off the request
    /// threads.
    pub async fn chunk(&self, n: u64) -> Result<Vec<u8>> {
        let (store, id) = (self.store.clone(), self.meta.id);
        match tokio::task::spawn_blocking(move || super::output(&store, &id, n)).await?? {
            Some(bytes) => Ok(bytes),
            None => Err(Error::Internal(format!("chunk {n} of job {} is missing", id.to_hex()))),
        }
    }
}

fn too_many_bytes(limits: JobLimits) -> Error {
    Error::PayloadTooLarge(format!("a job's request body is limited to {} bytes", limits.max_bytes))
}

fn too_many_lines(limits: JobLimits) -> Error {
    Error::PayloadTooLarge(format!("a job is limited to {} request lines", limits.max_lines))
}

/// Jobs of `department` not finished: being received, queued or running.
async fn unfinished_jobs(store: &Arc<Store>, department: &str) -> Result<u64> {
    let (store, department) = (store.clone(), department.to_owned());
    let all = tokio::task::spawn_blocking(move || super::all(&**store.engine())).await??;
    let unfinished = |m: &&JobMeta| matches!(m.state, JobState::Receiving | JobState::Queued | JobState::Running);
    Ok(all.iter().filter(|m| m.department == department).filter(unfinished).count() as u64)
}

async fn write(store: &Arc<Store>, b: WriteBatch, d: Durability) -> Result<()> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.engine().write(b, d)).await??;
    Ok(())
}

async fn discard(store: &Arc<Store>, id: JobId) {
    let store = store.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut b = WriteBatch::new();
        super::delete_into(&**store.engine(), &id, &mut b)?;
        store.engine().write(b, Durability::Buffered)
    })
    .await;
    if !matches!(r, Ok(Ok(()))) {
        // Left behind, it is discarded at the next start.
        tracing::warn!(job = %id.to_hex(), "cannot discard an incomplete job");
    }
}
