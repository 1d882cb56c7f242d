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
use serde_json::{json, Map, Value};
use std::time::Duration;

pub const MAX_LIMIT: usize = 1000;
pub const MAX_WAIT_SECONDS: u64 = 60;
/// Entries examined per request at most, so that a caller who may read
/// little of a busy log still gets a bounded, resumable answer.
const SCAN_CAP: usize = 10_000;

#[derive(Deserialize)]
pub struct Params {
    after: Option<u64>,
    limit: Option<usize>,
    wait: Option<u64>,
}

pub async fn changes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(purpose): Extension<Purpose>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
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
        out.push(json!({
            "seq": c.seq,
            "dataset": c.dataset,
            "subject": c.key.subject().as_str(),
            "key": c.key.as_str(),
            "op": c.op.as_str(),
            "version": c.version,
            "committed_at": format_datetime(c.committed_at),
            "fields": fields,
        }));
    }
    if events.is_empty() {
        let mut ev = event(&caller, Some(&purpose), Action::ChangeFeed, None);
        ev.outcome = format!("no changes after {after}");
        events.push(ev);
    }
    commit(&state, Vec::new(), events).await?;
    Ok(Json(json!({"changes": out, "next": next})))
}
