//! The job use cases of a consumer: submit a long batch comparison (its
//! input stored as it arrives, acknowledged once synced), follow it, and
//! download its answers (itself an audited use). Only the submitting
//! department sees a job; to anyone else it is as absent as a missing one.

use super::{JobId, JobMeta, JobState};
use crate::batch::Chunk;
use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::service::Queries;
use basedata_store::{Action, Durability, Store, WriteBatch};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why a submission's input did not arrive whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokenInput;

impl Queries {
    /// Stores a job's input chunk by chunk as `chunks` delivers it, then
    /// queues the job. `input` reports whether the input arrived whole;
    /// if not, what was stored is discarded. Returns once the whole input
    /// is synced.
    pub async fn submit_job(
        &self,
        caller: &Caller,
        purpose: &str,
        mut chunks: mpsc::Receiver<Chunk>,
        input: impl std::future::Future<Output = Result<(), BrokenInput>>,
    ) -> Result<JobMeta> {
        let id = JobId::random()?;
        let mut meta = JobMeta {
            id,
            department: caller.department.id.clone(),
            operator: caller.operator.clone(),
            purpose: purpose.to_owned(),
            state: JobState::Receiving,
            created_at: self.store.clock().now_micros(),
            finished_at: None,
            total: 0,
            chunks: 0,
            done_chunks: 0,
            counts: Default::default(),
            error: None,
        };
        let mut b = WriteBatch::new();
        super::put_meta(&mut b, &meta);
        write(&self.store, b, Durability::Buffered).await?;
        while let Some(chunk) = chunks.recv().await {
            meta.total = chunk.first_line + chunk.lines as u64 - 1;
            let mut b = WriteBatch::new();
            super::put_input(&mut b, &id, meta.chunks, &chunk);
            // Unsynced: the final synced write below covers every earlier one.
            write(&self.store, b, Durability::Buffered).await?;
            meta.chunks += 1;
        }
        if input.await.is_err() {
            discard(&self.store, id).await;
            return Err(Error::InvalidBody("the request body could not be read to its end".into()));
        }
        meta.state = JobState::Queued;
        let mut b = WriteBatch::new();
        super::put_meta(&mut b, &meta);
        write(&self.store, b, Durability::Sync).await?;
        self.job_wake.notify_one();
        tracing::info!(job = %id.to_hex(), department = %meta.department, lines = meta.total, "batch job queued");
        Ok(meta)
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
        match tokio::task::spawn_blocking(move || super::output(&**store.engine(), &id, n)).await?? {
            Some(bytes) => Ok(bytes),
            None => Err(Error::Internal(format!("chunk {n} of job {} is missing", id.to_hex()))),
        }
    }
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
