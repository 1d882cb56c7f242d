//! `GET /v1/changes`: the change feed (`Queries::changes`), the change log
//! in commit order reduced to what the caller may read, with long polling
//! (`wait`). `next` is the position to resume from.

use super::schema::{ChangeItem, Changes, ErrorBody};
use super::ApiResult;
use super::AppState;
use crate::auth::{Caller, Purpose};
use axum::extract::{Query, State};
use axum::{Extension, Json};
use basedata_store::value::format_datetime;
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// Changes after this sequence number (default 0). Before the oldest
    /// change the log still holds (see `change_retention_days`), the answer
    /// is `409 conflict` with `details.kept_after`, where it now starts.
    #[param(minimum = 0)]
    after: Option<u64>,
    /// At most this many changes (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Seconds to wait for a change when there is none yet (0–60).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

/// The change log in commit order, filtered to the datasets the caller
/// provides or holds an approved subscription to (a grant of kind
/// `subscription`, for the purpose stated) and to the fields it may read.
#[utoipa::path(get, path = "/v1/changes", tag = "subjects",
    params(Params, ("X-Purpose" = String, Header, description = "Purpose of use: CODE or CODE; note")),
    responses((status = 200, body = Changes), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "purpose_not_allowed"),
              (status = 409, body = ErrorBody, description = "changes after `after` were removed for the retention period (`details.kept_after`)"),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn changes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(purpose): Extension<Purpose>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Changes>> {
    let (after, limit, wait) = (p.after.unwrap_or(0), p.limit.unwrap_or(100), p.wait.unwrap_or(0));
    let page = state.queries.changes(&caller, &purpose.0, after, limit, wait).await?;
    let changes = page
        .changes
        .into_iter()
        .map(|c| ChangeItem {
            seq: c.seq,
            subject: c.key.subject().as_str().into(),
            key: c.key.as_str().into(),
            id_type: c.key.other_doc_type().map(|d| d.as_str().into()),
            op: c.op.as_str().into(),
            version: c.version,
            committed_at: format_datetime(c.committed_at),
            fields: c.fields.iter().map(|(n, v)| (n.clone(), v.to_json())).collect(),
            dataset: c.dataset,
        })
        .collect();
    Ok(Json(Changes { changes, next: page.next }))
}
