//! `GET /v1/changes`: the change log in commit order, reduced to the
//! datasets and fields the caller may read at the time of reading, with
//! long polling (`wait`) that sleeps on a watch channel instead of
//! polling the store. `next` is the position to resume from, so a consumer
//! that stores it loses and repeats nothing across restarts of either side.

use super::commit::{commit, event};
use super::subjects::may_read;
use super::{ApiError, ApiResult, AppState};
use crate::auth::{Caller, Purpose};
use axum::extract::{Query, State};
use axum::{Extension, Json};
use basedata_query::{decide, Access};
use basedata_store::value::format_datetime;
use basedata_store::Action;
use serde::Deserialize;
use super::schema::{ChangeItem, Changes, ErrorBody};
use serde_json::Map;
use std::time::Duration;

pub const MAX_LIMIT: usize = 1000;
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Entries examined per request at most, so that a caller who may read
/// little of a busy log still gets a bounded, resumable answer.
const SCAN_CAP: usize = 10_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// Changes after this sequence number (default 0).
    #[param(minimum = 0)]
    after: Option<u64>,
    /// At most this many changes (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Seconds to wait for a change when there is none yet (0–60).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

/// The change log in commit order, filtered to what the caller may read.
#[utoipa::path(get, path = "/v1/changes", tag = "subjects",
    params(Params, ("X-Purpose" = String, Header, description = "Purpose of use")),
    responses((status = 200, body = Changes), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn changes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(purpose): Extension<Purpose>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Changes>> {
    let after = p.after.unwrap_or(0);
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid_value(format!("limit is 1 to {MAX_LIMIT}")));
    }
    let wait = p.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::invalid_value(format!("wait is at most {MAX_WAIT_SECONDS} seconds")));
    }
    if wait > 0 && state.store.last_seq() <= after {
        let mut rx = state.seq_tx.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(wait), rx.wait_for(|s| *s > after)).await;
    }
    let store = state.store.clone();
    let scanned = tokio::task::spawn_blocking(move || store.changes(after, SCAN_CAP))
        .await
        .map_err(ApiError::internal)??;
    let mut next = after;
    let mut out = Vec::new();
    let mut events = Vec::new();
    for c in &scanned {
        if out.len() >= limit {
            break;
        }
        next = c.seq;
        let Some(ds) = state.catalog.dataset(&c.dataset) else { continue };
        if !may_read(&caller, ds) {
            continue;
        }
        let mut fields = Map::new();
        for (name, v) in &c.fields {
            let visible = ds
                .field(name)
                .is_some_and(|f| decide(&caller.department.id, ds, f, &*state.grants) == Access::Allowed);
            if visible {
                fields.insert(name.clone(), v.to_json());
            }
        }
        let mut ev = event(&caller, Some(&purpose), Action::ChangeFeed, Some(c.key));
        ev.datasets = vec![c.dataset.clone()];
        ev.fields = fields.keys().map(|f| format!("{}.{f}", c.dataset)).collect();
        ev.outcome = format!("seq {}", c.seq);
        events.push(ev);
        out.push(ChangeItem {
            seq: c.seq,
            dataset: c.dataset.clone(),
            subject: c.key.subject().as_str().into(),
            key: c.key.as_str().into(),
            op: c.op.as_str().into(),
            version: c.version,
            committed_at: format_datetime(c.committed_at),
            fields,
        });
    }
    if events.is_empty() {
        let mut ev = event(&caller, Some(&purpose), Action::ChangeFeed, None);
        ev.outcome = format!("no changes after {after}");
        events.push(ev);
    }
    commit(&state, Vec::new(), events).await?;
    Ok(Json(Changes { changes: out, next }))
}
