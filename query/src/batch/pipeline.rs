//! Running batch comparisons: chunks of request lines are verified
//! (`basedata_query::batch`) and each chunk's audited uses, one per line,
//! are group-committed (stored as one chunk entry, `store::audit::chunk`)
//! before the chunk's answers are released. The same
//! pipeline serves `POST /v1/verify/batch`, `basedata compare` and the
//! benchmark; jobs (`crate::jobs::runner`) reuse its steps.
//!
//! Pipeline: chunks are parsed, read (one sorted multi-get each) and
//! verified on the batch verifier threads ([`super::background`], at a lower
//! CPU priority than requests), [`verifiers`] at a time (one per core),
//! and handed to the group committer in input order; up to [`IN_FLIGHT`]
//! chunks may wait there, so the writer thread syncs several as one group
//! while the next ones are verified. Verification costs several times the
//! writer's work a line (a chunk entry, a subject index key a line, the
//! WAL), so both cores verify while the writer syncs, and the sync's
//! latency is hidden; committing one chunk at a time left the cores idle
//! while each sync completed.
//! Answers are released in order, each chunk only once it is durable.
//! Memory is bounded by a few chunks: the input channel, the chunks being
//! verified, those in flight and the output queue.
//!
//! Hot path: per-line work happens in [`process`](super::process), on the
//! batch verifier threads, which also records each line's use in the
//! compact form (`basedata_store::audit::uses::Uses`: strings interned,
//! the key's pseudonym made there) that the journal and the writer take
//! without building an event, a string or a pseudonym a line.

use super::{Chunk, ChunkResult, Counts};
use crate::access::GrantSource;
use crate::caller::Caller;
use basedata_store::catalog::Dataset;
use basedata_store::commit::{CommitError, Committer, JobDone, JobResult, SubmitError};
use basedata_store::audit::uses::Uses;
use basedata_store::{Action, AuditEvent, Store, WriteBatch};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a chunk waits for room in a full write queue before the run
/// fails: batches slow down under load rather than fail at once.
pub const SUBMIT_PATIENCE: Duration = Duration::from_secs(60);

/// Answer chunks queued for a slow reader before verification pauses.
pub const OUT_QUEUE: usize = 8;

/// Chunks submitted to the committer and not yet durable. One synced write
/// takes milliseconds whatever its size, so several chunks in flight let
/// the writer put them into one group while the next ones are verified.
/// The committer keeps submission order, so audit entries stay in line
/// order and what is durable after a crash is always a prefix of chunks.
pub const IN_FLIGHT: usize = 8;

/// Who runs a batch, and why: recorded in every line's audit entry.
#[derive(Clone)]
pub struct Requester {
    pub caller: Caller,
    pub purpose: String,
    /// The caller's grants, for fields that only their readers may verify.
    pub grants: Arc<dyn GrantSource>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester").field("caller", &self.caller).field("purpose", &self.purpose).finish()
    }
}

/// The single-verification rules: consumers may verify against every
/// dataset, a provider only against its own; fields the catalog marks
/// unverifiable only with the right to read them, and fields of few values
/// the caller may not read not in bulk at all.
impl super::LineAccess for Requester {
    fn by(&self) -> AuditEvent {
        self.caller.event(&self.purpose, Action::BatchVerify, None)
    }
    fn may_read(&self, ds: &Dataset) -> bool {
        crate::access::may_read(&self.caller, ds)
    }
    fn refusal(&self, ds: &Dataset, field: &basedata_store::catalog::Field) -> Option<String> {
        crate::access::bulk_refusal(&self.caller, ds, field, &*self.grants)
    }
    fn relied_on(&self, ds: &Dataset, field: &basedata_store::catalog::Field) -> Vec<String> {
        crate::access::relied_on(&self.caller, ds, field, &*self.grants)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("storage: {0}")]
    Store(#[from] Arc<basedata_store::Error>),
    #[error("the write queue stayed full for {}s", SUBMIT_PATIENCE.as_secs())]
    Overloaded,
    #[error("the writer has stopped")]
    Closed,
    #[error("the reader of the answers went away")]
    Disconnected,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("a worker failed: {0}")]
    Worker(String),
}

impl From<basedata_store::Error> for BatchError {
    fn from(e: basedata_store::Error) -> Self {
        BatchError::Store(Arc::new(e))
    }
}

impl From<tokio::task::JoinError> for BatchError {
    fn from(e: tokio::task::JoinError) -> Self {
        BatchError::Worker(e.to_string())
    }
}

/// Everything a run needs.
#[derive(Clone)]
pub struct Batch {
    pub store: Arc<Store>,
    pub committer: Arc<Committer>,
    pub requester: Arc<Requester>,
}

/// A verified chunk with its audited uses, ready to commit.
pub struct Verified {
    pub result: ChunkResult,
    pub uses: Uses,
}

/// A chunk being verified on a batch verifier thread.
pub type VerifyTask = super::background::Task<Result<Verified, BatchError>>;

/// Verifies a chunk and records its uses, on the calling thread.
pub fn verify_now(store: &Store, req: &Requester, chunk: &Chunk) -> Result<Verified, BatchError> {
    let mut result = super::process(store, req, chunk)?;
    let uses = std::mem::take(&mut result.uses);
    Ok(Verified { result, uses })
}

/// Chunks verified at once: verification is the costliest stage (several
/// times the writer's work a line), so it gets every core; the writer
/// thread shares them.
pub fn verifiers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8)
}

impl Batch {
    /// Starts verifying `chunk` on a batch verifier thread.
    pub fn spawn_verify(&self, chunk: Chunk) -> VerifyTask {
        let (store, req) = (self.store.clone(), self.requester.clone());
        super::background::run(move || verify_now(&store, &req, &chunk))
    }

    /// Hands audited uses and extra writes to the group committer, waiting
    /// for room if its queue is full; the receiver answers once durable.
    /// A chunk's uses alone go to the journal (see `commit`): the writer
    /// enters them behind, and the answers wait for the journal only.
    pub async fn submit(&self, uses: Uses, extra: WriteBatch) -> Result<oneshot::Receiver<JobResult>, BatchError> {
        if extra.is_empty() && self.committer.journals_uses() {
            return self.committer.append_uses(uses).await.map_err(|e| match e {
                CommitError::Failed(e) => BatchError::Store(e),
                CommitError::Overloaded => BatchError::Overloaded,
                CommitError::Closed => BatchError::Closed,
            });
        }
        let (tx, rx) = oneshot::channel();
        let committer = self.committer.clone();
        tokio::task::spawn_blocking(move || {
            let reply = Box::new(move |r: JobResult| {
                let _ = tx.send(r);
            });
            committer.submit_uses_waiting(uses, extra, reply, SUBMIT_PATIENCE)
        })
        .await?
        .map_err(|e| match e {
            SubmitError::Overloaded => BatchError::Overloaded,
            SubmitError::Closed => BatchError::Closed,
        })?;
        Ok(rx)
    }

    /// Runs chunks from `chunks` to `out` until the input ends; answers
    /// leave in request order, each chunk only once its audit entries are
    /// durable. Returns the line counts.
    pub async fn stream(&self, mut chunks: mpsc::Receiver<Chunk>, out: mpsc::Sender<Vec<u8>>) -> Result<Counts, BatchError> {
        let (pending_tx, mut pending_rx) = mpsc::channel::<(oneshot::Receiver<JobResult>, ChunkResult)>(IN_FLIGHT);
        let produce = async move {
            // Chunks being verified, in input order; several at once, each
            // committed in turn as soon as it and those before it are done.
            let mut running: VecDeque<VerifyTask> = VecDeque::new();
            let mut input_done = false;
            let max = verifiers();
            loop {
                if running.is_empty() && input_done {
                    break;
                }
                let take = !input_done && running.len() < max;
                tokio::select! {
                    biased;
                    done = async { running.front_mut().expect("checked").await }, if !running.is_empty() => {
                        running.pop_front();
                        let Verified { result, uses } = done??;
                        let rx = self.submit(uses, WriteBatch::new()).await?;
                        if pending_tx.send((rx, result)).await.is_err() {
                            // The releasing side stopped; its error says why.
                            break;
                        }
                    }
                    chunk = chunks.recv(), if take => match chunk {
                        Some(c) => running.push_back(self.spawn_verify(c)),
                        None => input_done = true,
                    },
                }
            }
            Ok::<_, BatchError>(())
        };
        let release = async move {
            let mut counts = Counts::default();
            while let Some((rx, res)) = pending_rx.recv().await {
                durable(rx).await?;
                out.send(res.out).await.map_err(|_| BatchError::Disconnected)?;
                counts.add(&res.counts);
            }
            Ok::<_, BatchError>(counts)
        };
        let (produced, released) = tokio::join!(produce, release);
        produced?;
        released
    }

    /// A whole comparison from a reader to a writer, for offline tools and
    /// benchmarks: one blocking thread reads and cuts, the pipeline above
    /// verifies and audits, another blocking thread writes. `progress` is
    /// called with the bytes read so far. Returns the counts and the writer
    /// (flushed).
    pub fn run_blocking<R, W>(
        &self,
        mut input: R,
        mut output: W,
        progress: impl Fn(u64) + Send + 'static,
    ) -> Result<(Counts, W), BatchError>
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        rt.block_on(async {
            let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(1);
            let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
            let reader = tokio::task::spawn_blocking(move || -> Result<(), BatchError> {
                let mut cutter = super::Cutter::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut chunks = Vec::new();
                let mut read = 0u64;
                loop {
                    let n = match input.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e.into()),
                    };
                    read += n as u64;
                    cutter.push(&buf[..n], &mut chunks);
                    for c in chunks.drain(..) {
                        if chunk_tx.blocking_send(c).is_err() {
                            // The pipeline stopped; its error says why.
                            return Ok(());
                        }
                    }
                    progress(read);
                }
                if let Some(c) = cutter.finish() {
                    let _ = chunk_tx.blocking_send(c);
                }
                Ok(())
            });
            let writer = tokio::task::spawn_blocking(move || -> Result<W, BatchError> {
                while let Some(bytes) = out_rx.blocking_recv() {
                    output.write_all(&bytes)?;
                }
                output.flush()?;
                Ok(output)
            });
            let counts = self.stream(chunk_rx, out_tx).await;
            // Whatever stopped first, both threads end: their channels close.
            let read = reader.await?;
            let written = writer.await?;
            // A failed writer or reader explains a stopped pipeline better
            // than the pipeline's own "disconnected".
            let output = written?;
            read?;
            Ok((counts?, output))
        })
    }
}

/// Waits for a submitted group to be durable.
pub async fn durable(rx: oneshot::Receiver<JobResult>) -> Result<JobDone, BatchError> {
    match rx.await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(BatchError::Store(e)),
        Err(_) => Err(BatchError::Closed),
    }
}
