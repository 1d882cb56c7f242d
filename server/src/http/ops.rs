//! Operational endpoints: liveness, readiness (the store accepts a write)
//! and the catalog.

use super::{ApiError, ApiResult, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use basedata_store::{Cf, Durability, WriteBatch};
use super::schema::{CatalogDoc, ErrorBody, Health, Ready};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// The store is open and accepts writes.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Ready), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Ready>> {
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
    if let Some(c) = &state.cluster {
        if !c.healthy() {
            // Reads are still answered; updates are not.
            return Err(ApiError::unavailable("this node cannot reach the update log (cluster mode); it serves reads only"));
        }
    }
    match probe {
        Ok(last_seq) => Ok(Json(Ready { status: "ready".into(), last_seq })),
        Err(e) => {
            tracing::error!(error = %e, "readiness probe failed");
            Err(ApiError::unavailable("the store does not accept writes"))
        }
    }
}

/// Every dataset the platform holds, with its fields and share classes.
#[utoipa::path(get, path = "/v1/catalog", tag = "catalog",
    responses((status = 200, body = CatalogDoc), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn catalog(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.catalog_json.clone())
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.store.clone();
    let commit = state.committer.stats().clone();
    let metrics = state.metrics.clone();
    metrics.set_connections(&state.connections);
    if let Some(c) = &state.cluster {
        metrics.set_cluster(c);
    }
    let body = tokio::task::spawn_blocking(move || metrics.render(&store, &commit)).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
