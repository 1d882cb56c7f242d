//! `POST /v1/datasets/{dataset}/updates`: provider updates, NDJSON (parsed
//! as the body streams in) or a JSON array, validated line by line; valid
//! lines are applied together through the group committer, and the answer
//! is sent only once they are durable.

use super::commit::{commit_with, deny, event};
use super::subjects::json_body;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::config::Role;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::{Extension, Json};
use basedata_ingest::line::{parse_line, parse_value, LineError};
use basedata_store::catalog::Dataset;
use basedata_store::{Action, Outcome, Update};
use http_body_util::BodyExt;
use super::schema::{ErrorBody, Rejection, UpdatesResult};
#[allow(unused_imports)]
use super::schema::UpdateLine;
use serde_json::Value;

/// Per-request collection of parsed updates and rejections.
#[derive(Default)]
struct Parsed {
    updates: Vec<Update>,
    /// The line number of each update.
    lines: Vec<u64>,
    rejected: Vec<(u64, LineError)>,
}

impl Parsed {
    fn line(&mut self, ds: &Dataset, n: u64, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match parse_line(ds, line) {
            Ok(u) => {
                self.updates.push(u);
                self.lines.push(n);
            }
            Err(e) => self.rejected.push((n, e)),
        }
    }
}

enum Format {
    Ndjson,
    JsonArray,
}

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
    body: Body,
) -> ApiResult<Json<UpdatesResult>> {
    let ds = state.catalog.dataset(&dataset).ok_or_else(|| ApiError::unknown_dataset(&dataset))?;
    let purpose = super::header_text_map(&headers, "x-purpose").unwrap_or_else(|| "provider update".into());
    let mut ev = event(&caller, None, Action::Update, None);
    ev.purpose = purpose;
    ev.datasets = vec![ds.id.clone()];
    if !(caller.department.has(Role::Provider) && caller.department.id == ds.provider) {
        let msg = format!("only {} provides dataset {} (one datum, one source)", ds.provider, ds.id);
        return Err(deny(&state, ev, ApiError::forbidden(msg)).await);
    }
    let format = body_format(&headers)?;
    let parsed = read_body(&state, ds, format, body).await?;
    if let Some(cluster) = state.cluster.clone() {
        return logged(&state, &cluster, ds, parsed, ev).await;
    }
    let submitted = parsed.updates.len();
    ev.outcome = format!("submitted={submitted} rejected={}", parsed.rejected.len());
    // New keys' mappings are sealed here, on a request thread, so that the
    // single writer has less to do per update.
    let mut mappings = basedata_store::WriteBatch::new();
    state.store.seal_new_keys(&parsed.updates, &mut mappings)?;
    let done = commit_with(&state, parsed.updates, vec![ev], mappings).await?;
    let applied = done.outcomes.iter().filter(|o| matches!(o, Outcome::Applied { .. })).count();
    let rejected = rejections(parsed.rejected);
    Ok(Json(UpdatesResult { applied, stale: submitted - applied, rejected, last_seq: done.last_seq, position: None, logged: None }))
}

fn rejections(r: Vec<(u64, LineError)>) -> Vec<Rejection> {
    r.into_iter().map(|(line, e)| Rejection { line, key: e.key, code: e.code.into(), message: e.message }).collect()
}

/// Cluster mode: the request is audited here first (so that no update is
/// in the log without the request that brought it on record), then the
/// valid lines are made durable in the replicated log — the `200` promises
/// that much, and no more is needed for them to reach every node — and the
/// answer waits a little for this node to apply them, so it can tell
/// applied from stale.
async fn logged(
    state: &AppState,
    cluster: &crate::cluster::Cluster,
    ds: &Dataset,
    mut parsed: Parsed,
    mut ev: basedata_store::AuditEvent,
) -> ApiResult<Json<UpdatesResult>> {
    let prepared = if parsed.updates.is_empty() {
        crate::cluster::Prepared::default()
    } else {
        cluster.prepare(&state.store, &ds.id, &parsed.updates).map_err(|e| ApiError::unavailable(e.0))?
    };
    for &i in &prepared.too_large {
        let e = LineError {
            code: "payload_too_large",
            message: format!("this update is larger than one message of the update log takes ({} bytes)", prepared.limit),
            key: Some(parsed.updates[i].key.as_str().to_owned()),
        };
        parsed.rejected.push((parsed.lines[i], e));
    }
    parsed.rejected.sort_by_key(|(line, _)| *line);
    ev.outcome = format!("submitted={} rejected={}", parsed.updates.len() - prepared.too_large.len(), parsed.rejected.len());
    commit_with(state, Vec::new(), vec![ev], basedata_store::WriteBatch::new()).await?;
    let logged_msgs = cluster.send(&prepared).await.map_err(|e| ApiError::unavailable(e.0))?;
    let rejected = rejections(parsed.rejected);
    let Some(last) = logged_msgs.iter().map(|m| m.position).max() else {
        let position = Some(cluster.position());
        return Ok(Json(UpdatesResult { applied: 0, stale: 0, rejected, last_seq: state.store.last_seq(), position, logged: None }));
    };
    // Lines of partitions this node does not hold are applied elsewhere:
    // their outcome is not known here.
    let (mine, elsewhere): (Vec<&crate::cluster::LoggedMessage>, Vec<_>) =
        logged_msgs.iter().partition(|m| cluster.serves(m.partition));
    let mut logged = elsewhere.iter().map(|m| m.lines).sum::<usize>();
    let (mut applied, mut stale) = (0, 0);
    let mut last_seq = state.store.last_seq();
    let wait = std::time::Duration::from_millis(cluster.config().apply_wait_ms);
    let outcomes: Option<Vec<_>> = match mine.iter().map(|m| m.position).max() {
        Some(p) if cluster.wait_for(p, wait).await => mine.iter().map(|m| cluster.outcome(m.position)).collect(),
        Some(_) => None,
        None => Some(Vec::new()),
    };
    match outcomes {
        Some(o) => {
            applied = o.iter().map(|a| a.applied).sum();
            stale = o.iter().map(|a| a.stale).sum();
            last_seq = o.iter().map(|a| a.last_seq).max().unwrap_or(last_seq);
        }
        None => logged += mine.iter().map(|m| m.lines).sum::<usize>(),
    }
    Ok(Json(UpdatesResult { applied, stale, rejected, last_seq, position: Some(last), logged: Some(logged) }))
}

async fn read_body(state: &AppState, ds: &Dataset, format: Format, mut body: Body) -> ApiResult<Parsed> {
    let limit = state.max_body_bytes;
    let mut parsed = Parsed::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut line_no = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::invalid_body("the request body could not be read"))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        buf.extend_from_slice(&data);
        if let Format::Ndjson = format {
            // Parse the complete lines now so that only a partial line and
            // the parsed updates are held, never the raw body.
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&c| c == b'\n') {
                line_no += 1;
                parsed.line(ds, line_no, &buf[start..start + nl]);
                start += nl + 1;
            }
            buf.drain(..start);
        }
    }
    match format {
        Format::Ndjson => {
            if !buf.is_empty() {
                line_no += 1;
                parsed.line(ds, line_no, &buf);
            }
        }
        Format::JsonArray => {
            let items: Vec<Value> = json_body(&buf)?;
            for (i, v) in items.iter().enumerate() {
                match parse_value(ds, v) {
                    Ok(u) => {
                        parsed.updates.push(u);
                        parsed.lines.push(i as u64 + 1);
                    }
                    Err(e) => parsed.rejected.push((i as u64 + 1, e)),
                }
            }
        }
    }
    Ok(parsed)
}
