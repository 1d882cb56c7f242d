//! `POST /v1/verify/batch` (NDJSON in, NDJSON out, streamed) and the job
//! endpoints `POST /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/result`.
//!
//! The batch endpoint answers `200` at once and streams: the request body
//! is cut into chunks as it arrives, and each chunk's answers are sent as
//! soon as its audit entries are durable (`basedata_query::batch::pipeline`).
//! Answers the client has not read yet wait in a [`Spool`] (memory, then a
//! sealed temporary file), so the body is read on whatever the client does
//! with the answer: a client that sends everything before it reads works
//! as well as one that reads while it sends, and memory stays bounded
//! whatever the body's length. A failure mid-stream aborts the
//! response rather than end it cleanly, so a truncated answer can never be
//! mistaken for a complete one.

use super::schema::ErrorBody;
use super::{ApiError, ApiResult, AppState};
use crate::auth::{Caller, Purpose};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use basedata_ingest::log::UpdateLog;
use basedata_query::batch::pipeline::OUT_QUEUE;
use basedata_query::batch::{Batch, BatchError, Chunk, Counts, Cutter, Requester};
use basedata_query::jobs::queue::{BrokenInput, Download, JobLimits};
use basedata_query::jobs::JobMeta;
use crate::spool::{Spool, SPOOL_DISK_MAX, SPOOL_MEMORY};
use http_body_util::channel::Channel;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

type BodySender = http_body_util::channel::Sender<Bytes, std::io::Error>;

/// One request line of a batch comparison (a line of the NDJSON body).
/// Documentation only: lines are parsed by `basedata_query::batch`.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct BatchLine {
    /// The caller's reference, echoed in the answer.
    #[schema(rename = "ref", value_type = Option<Object>)]
    pub reference: Option<Value>,
    /// `person` or `entity`.
    pub subject: String,
    pub key: String,
    /// Default: the subject's primary dataset.
    pub dataset: Option<String>,
    /// Claimed values by field name.
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
}

/// One answer line: a verdict, or the line's error. Documentation only:
/// answers are written by `basedata_query::batch`.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub struct BatchAnswer {
    #[schema(rename = "ref", value_type = Option<Object>)]
    pub reference: Option<Value>,
    /// The normalized key.
    pub key: Option<String>,
    pub dataset: Option<String>,
    /// `match`, `mismatch` or `not_found`.
    pub result: Option<String>,
    /// Verdict per claimed field: `match`, `mismatch` or `no_value`.
    #[schema(value_type = Option<Object>)]
    pub fields: Option<serde_json::Map<String, Value>>,
    /// Position of the line among the request's non-blank lines (errors only).
    pub line: Option<u64>,
    /// `{"code", "message", "details"?}` when the line could not be verified.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

/// `202` to a job submission.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JobAccepted {
    pub id: String,
    /// `queued`.
    pub state: String,
    /// Request lines stored.
    pub total: u64,
}

/// A job's state and counts.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub id: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub total: u64,
    pub processed: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub not_found: u64,
    pub invalid: u64,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why a failed job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A streamed NDJSON response and the sender that feeds it.
fn ndjson_stream() -> (BodySender, Response) {
    let (tx, body) = Channel::<Bytes, std::io::Error>::new(1);
    let resp = ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::new(body)).into_response();
    (tx, resp)
}

/// How long the body may pause before the whole lines read so far are
/// verified as a chunk of their own, short of a full one.
const BODY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Reads `body`, cutting it into chunks for `tx`. `Err` when the body
/// broke off (the client went away) or the receiver stopped. Lines are
/// passed on in full chunks while the body flows, and whatever whole lines
/// are waiting once it pauses for [`BODY_PAUSE`]: a client that sends a few
/// lines and waits for their answers before it sends more gets them.
async fn cut_body(mut body: Body, tx: mpsc::Sender<Chunk>) -> Result<(), ()> {
    let mut cutter = Cutter::new();
    let mut ready = Vec::new();
    loop {
        let frame = match tokio::time::timeout(BODY_PAUSE, body.frame()).await {
            Ok(frame) => frame,
            Err(_) => {
                if let Some(c) = cutter.flush() {
                    tx.send(c).await.map_err(|_| ())?;
                }
                body.frame().await
            }
        };
        let Some(frame) = frame else { break };
        let Ok(frame) = frame else { return Err(()) };
        let Ok(data) = frame.into_data() else { continue };
        cutter.push(&data, &mut ready);
        for c in ready.drain(..) {
            tx.send(c).await.map_err(|_| ())?;
        }
    }
    if let Some(c) = cutter.finish() {
        tx.send(c).await.map_err(|_| ())?;
    }
    Ok(())
}

fn batch_for(state: &AppState, caller: Caller, purpose: Purpose) -> Batch {
    Batch {
        store: state.store.clone(),
        committer: state.committer.clone(),
        requester: Arc::new(Requester { caller, purpose: purpose.0, grants: state.queries.grants.clone() }),
    }
}

/// Batch comparisons take keys of every partition: in cluster mode they
/// run on nodes that hold them all.
fn holds_everything(state: &AppState) -> ApiResult<()> {
    match &state.cluster {
        Some(c) if !c.partitioning().serves_all() => {
            Err(ApiError::unavailable("this node holds only some partitions; send batch comparisons to a node that holds them all"))
        }
        _ => Ok(()),
    }
}

/// Batch comparisons streaming at once, all departments together. Each
/// holds up to about 130 MiB at worst (chunks in flight of 1 MiB lines, and
/// its spool's memory), so that many bound the server's memory whatever
/// each department's own limit; one more is told to retry.
pub const MAX_BATCH_STREAMS: usize = 32;

/// Batch comparison: NDJSON claims in, one NDJSON answer per line out, in
/// order, streamed as the body arrives; one audit entry per line.
#[utoipa::path(post, path = "/v1/verify/batch", tag = "batch",
    params(("X-Purpose" = String, Header, description = "Purpose of use")),
    request_body(content = Vec<BatchLine>, content_type = "application/x-ndjson", description = "One claim a line"),
    responses((status = 200, body = Vec<BatchAnswer>, content_type = "application/x-ndjson",
               description = "One answer line per request line, in order"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(purpose): Extension<Purpose>,
    body: Body,
) -> Response {
    if let Err(e) = holds_everything(&state) {
        return e.into_response();
    }
    let Ok(place) = state.batch_streams.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "the server streams as many batch comparisons as it may; retry shortly, or submit a job (POST /v1/jobs)",
        )
        .with_retry_after(1)
        .into_response();
    };
    let dept = caller.department.id.clone();
    let batch = batch_for(&state, caller, purpose);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(1);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let (body_tx, resp) = ndjson_stream();
    let reader = tokio::spawn(cut_body(body, chunk_tx));
    let run = tokio::spawn(async move { batch.stream(chunk_rx, out_tx).await });
    // Answers are taken as fast as they come, whether or not the client
    // reads yet, so that the body is always read on.
    let spool = Arc::new(Spool::new(SPOOL_MEMORY, SPOOL_DISK_MAX));
    let collector = spool.clone();
    tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if collector.push(bytes).is_err() {
                // Dropping `out_rx` stops the run.
                return;
            }
        }
        collector.close();
    });
    tokio::spawn(async move {
        relay(spool, body_tx, reader, run, dept).await;
        // The stream's place, held until its answer ends.
        drop(place);
    });
    resp
}

/// Sends a batch comparison's spooled answers to the client, then ends
/// the answer cleanly only if the whole body was read and compared.
async fn relay(
    spool: Arc<Spool>,
    mut body_tx: BodySender,
    reader: tokio::task::JoinHandle<Result<(), ()>>,
    run: tokio::task::JoinHandle<Result<Counts, BatchError>>,
    dept: String,
) {
    while let Some(next) = spool.pop().await {
        let sent = match next {
            Ok(bytes) => body_tx.send_data(bytes).await.is_ok(),
            Err(e) => {
                tracing::error!(department = %dept, error = %e, "batch answers could not be spooled");
                spool.abandon();
                return body_tx.abort(std::io::Error::other("the batch comparison failed"));
            }
        };
        if !sent {
            tracing::info!(department = %dept, "batch comparison abandoned by the client");
            return spool.abandon();
        }
    }
    let read_whole = matches!(reader.await, Ok(Ok(())));
    match run.await {
        // The request body broke off: the answers cover only part of it.
        Ok(Ok(_)) if !read_whole => {
            tracing::info!(department = %dept, "batch comparison request body broke off");
            body_tx.abort(std::io::Error::other("the request body broke off"));
        }
        Ok(Ok(c)) => tracing::info!(
            department = %dept,
            lines = c.processed,
            matched = c.matched,
            mismatched = c.mismatched,
            not_found = c.not_found,
            invalid = c.invalid,
            spilled_bytes = spool.peak_spilled(),
            "batch comparison"
        ),
        Ok(Err(e)) => {
            tracing::error!(department = %dept, error = %e, "batch comparison failed");
            body_tx.abort(std::io::Error::other("the batch comparison failed"));
        }
        Err(e) => {
            tracing::error!(department = %dept, error = %e, "batch comparison panicked");
            body_tx.abort(std::io::Error::other("the batch comparison failed"));
        }
    }
}

/// Reads `body` into `tx` frame by frame. `Err` when the body broke off
/// (the client went away) or the receiver stopped.
async fn read_body(mut body: Body, tx: mpsc::Sender<Bytes>) -> Result<(), ()> {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err(()) };
        if let Ok(data) = frame.into_data() {
            tx.send(data).await.map_err(|_| ())?;
        }
    }
    Ok(())
}

/// Stores a job's input chunk by chunk as it arrives, then queues it.
/// The `202` is sent only once the whole input is synced. The department's
/// job limits apply: `413` past the size of a job, `429` with
/// `Retry-After` when it has as many unfinished jobs as it may.
#[utoipa::path(post, path = "/v1/jobs", tag = "batch",
    params(("X-Purpose" = String, Header, description = "Purpose of use")),
    request_body(content = Vec<BatchLine>, content_type = "application/x-ndjson", description = "One claim a line"),
    responses((status = 202, body = JobAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody, description = "Over the department's bytes or lines per job"),
              (status = 429, body = ErrorBody, description = "Too many unfinished jobs of the department (see Retry-After)"),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn submit_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(purpose): Extension<Purpose>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<JobAccepted>)> {
    holds_everything(&state)?;
    let limits = match state.departments.get(&caller.department.id) {
        Some(d) => d.limits.jobs(state.max_body_bytes),
        None => JobLimits { max_bytes: state.max_body_bytes as u64, ..JobLimits::default() },
    };
    let declared = super::declared_length(&headers);
    state.queries.job_refused_early(&caller, limits, declared).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let reader = tokio::spawn(read_body(body, tx));
    let input = async move { if matches!(reader.await, Ok(Ok(()))) { Ok(()) } else { Err(BrokenInput) } };
    // In a task of its own, so that it always ends by queueing the job or
    // discarding what it stored: a client that goes away half-way drops
    // this future, and a job left receiving would count against the
    // department's unfinished jobs until the next start.
    let queries = state.queries.clone();
    let submitted = tokio::spawn(async move { queries.submit_job(&caller, &purpose.0, limits, declared, rx, input).await });
    let meta = submitted.await.map_err(ApiError::internal)??;
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { id: meta.id.to_hex(), state: "queued".into(), total: meta.total })))
}

fn status(m: &JobMeta) -> JobStatus {
    JobStatus {
        id: m.id.to_hex(),
        state: m.state.as_str().to_owned(),
        total: m.total,
        processed: m.counts.processed,
        matched: m.counts.matched,
        mismatched: m.counts.mismatched,
        not_found: m.counts.not_found,
        invalid: m.counts.invalid,
        created_at: basedata_store::value::format_datetime(m.created_at),
        finished_at: m.finished_at.map(basedata_store::value::format_datetime),
        error: m.error.clone(),
    }
}

/// A job's state and counts (only the submitting department's jobs).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "batch",
    params(("id" = String, Path, description = "Job id"), ("X-Purpose" = String, Header, description = "Purpose of use")),
    responses((status = 200, body = JobStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn job_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    Ok(Json(status(&state.queries.job(&caller, &id).await?)))
}

/// The answers of a finished job, streamed chunk by chunk from the store.
#[utoipa::path(get, path = "/v1/jobs/{id}/result", tag = "batch",
    params(("id" = String, Path, description = "Job id"), ("X-Purpose" = String, Header, description = "Purpose of use")),
    responses((status = 200, body = Vec<BatchAnswer>, content_type = "application/x-ndjson",
               description = "One answer line per request line, in order"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The job is not done"), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn job_result(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(purpose): Extension<Purpose>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let result = match state.queries.job_result(&caller, &purpose.0, &id).await? {
        Download::Ready(r) => r,
        Download::NotDone(meta) => {
            let msg = format!("the job is {}; its result is ready when it is done", meta.state.as_str());
            let details = serde_json::to_value(status(&meta)).unwrap_or_default();
            return Err(ApiError::new(StatusCode::CONFLICT, "conflict", msg).with_details(details));
        }
    };
    let (mut tx, resp) = ndjson_stream();
    tokio::spawn(async move {
        for n in 0..result.meta.chunks {
            match result.chunk(n).await {
                Ok(bytes) => {
                    if tx.send_data(Bytes::from(bytes)).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::error!(job = %result.meta.id.to_hex(), chunk = n, error = %err, "cannot read a job's answers");
                    tx.abort(std::io::Error::other("the job's answers could not be read"));
                    return;
                }
            }
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests;
