//! `POST /v1/datasets/{dataset}/updates`: provider updates, NDJSON (parsed
//! as the body streams in) or a JSON array. The use case is
//! `basedata_ingest::Provide`: provider check, line validation, durable
//! commit (or the replicated log in cluster mode); the answer is sent only
//! once the applied lines are durable.

use super::schema::{ErrorBody, Rejection, UpdatesResult};
#[allow(unused_imports)]
use super::schema::UpdateLine;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::{Extension, Json};
use basedata_ingest::Format;
use basedata_query::rejected::{self, RejectedLine};
use http_body_util::BodyExt;

fn body_format(headers: &HeaderMap) -> ApiResult<Format> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/x-ndjson");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" | "text/plain" | "" => {
            Ok(Format::Ndjson)
        }
        "application/json" => Ok(Format::JsonArray),
        _ => Err(ApiError::invalid_body("send application/x-ndjson (one update a line) or application/json (an array)")),
    }
}

/// Provider updates of one dataset; answered once the applied ones are durable.
///
/// Only the dataset's provider, or one of its providers, may send them
/// (`403 forbidden` otherwise). A provider of a dataset of several (see
/// `providers` and `division` in the catalog) writes only records of its
/// areas or only its fields: its other lines are rejected with code
/// `forbidden`, and the rest apply.
#[utoipa::path(post, path = "/v1/datasets/{dataset}/updates", tag = "provider",
    params(("dataset" = String, Path, description = "Dataset id from the catalog")),
    request_body(content = Vec<UpdateLine>, description = "NDJSON (application/x-ndjson, one update a line) or a JSON array",
                 content_type = "application/json"),
    responses((status = 200, body = UpdatesResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn post_updates(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(dataset): Path<String>,
    headers: HeaderMap,
    mut body: Body,
) -> ApiResult<Json<UpdatesResult>> {
    let purpose = super::header_text(&headers, "X-Purpose", super::MAX_PURPOSE_CHARS)?;
    // Provider first: a refusal is audited whatever the body.
    let submission = state.provide.begin(&caller, &dataset, purpose.as_deref()).await?;
    super::check_body(&headers, Some(state.max_body_bytes))?;
    let mut submission = submission.in_format(body_format(&headers)?);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::invalid_body("the request body could not be read"))?;
        if let Ok(data) = frame.into_data() {
            submission.push(&data)?;
        }
    }
    // The listed rejected lines are kept for the provider's stewards once
    // the request's updates and audit entry are durable, in the same task
    // as the commit, so a request given up meanwhile keeps them too. The
    // updates are in and the answer lists the lines itself, so a failure
    // to keep them is logged rather than failing the request.
    let (queries, department, kept_for) = (state.queries.clone(), caller.department.id.clone(), dataset.clone());
    let keep: basedata_ingest::KeepRejected = Box::new(move |listed| {
        Box::pin(async move {
            let at = queries.grants.now();
            // Only the last lines of a request could be kept.
            let listed = &listed[listed.len().saturating_sub(rejected::KEPT)..];
            let lines = listed
                .iter()
                .map(|(line, e)| RejectedLine::new(at, *line, e.key.as_deref(), e.code, &e.message, &department))
                .collect();
            if let Err(e) = queries.keep_rejected(&kept_for, lines).await {
                tracing::warn!(code = e.code(), error = %e, dataset = %kept_for, "cannot keep the rejected lines for the stewards");
            }
        })
    });
    let r = state.provide.apply_keeping(submission, Some(keep)).await?;
    let rejected_total = r.rejected.total();
    let rejected_by_code = r.rejected.by_code.iter().map(|(code, n)| ((*code).to_owned(), *n)).collect();
    let rejected = r
        .rejected
        .listed
        .into_iter()
        .map(|(line, e)| Rejection { line, key: e.key, code: e.code.into(), message: e.message })
        .collect();
    Ok(Json(UpdatesResult {
        applied: r.applied,
        stale: r.stale,
        rejected,
        rejected_total,
        rejected_by_code,
        last_seq: r.last_seq,
        position: r.position,
        logged: r.logged,
    }))
}
