//! Operational endpoints: liveness, readiness (the store accepts a write)
//! and the catalog.

use super::{ApiError, ApiResult, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use basedata_store::{Cf, Durability, WriteBatch};
use serde_json::{json, Value};

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let store = state.store.clone();
    // A real (unsynced) write: "open" is not enough if the disk is full or
    // the store was switched read-only after an I/O error.
    let probe = tokio::task::spawn_blocking(move || {
        let mut b = WriteBatch::new();
        b.put(Cf::Meta, b"probe/readyz".to_vec(), store.clock().now_micros().to_be_bytes().to_vec());
        store.engine().write(b, Durability::Buffered).map(|_| store.last_seq())
    })
    .await
    .map_err(ApiError::internal)?;
    match probe {
        Ok(last_seq) => Ok(Json(json!({"status": "ready", "last_seq": last_seq}))),
        Err(e) => {
            tracing::error!(error = %e, "readiness probe failed");
            Err(ApiError::unavailable("the store does not accept writes"))
        }
    }
}

pub async fn catalog(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.catalog_json.clone())
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.store.clone();
    let commit = state.committer.stats().clone();
    let metrics = state.metrics.clone();
    let body = tokio::task::spawn_blocking(move || metrics.render(&store, &commit)).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
