//! Cluster mode over HTTP: `GET /v1/cluster` (this node's place in the
//! replicated log, and on request a digest of its records), and the layer
//! that tags every answer with the log position it reflects and holds a
//! request asking for a position this node has not reached yet.

use super::schema::{ChainHeadDoc, ClusterAudit, ClusterReplica, ClusterStatus, ErrorBody, GovernanceState};
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::cluster::{MIN_POSITION_HEADER, POSITION_HEADER};
use axum::extract::{Query, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusParams {
    /// Also count this node's records and digest them (reads them all),
    /// and give the head of every audit chain held here.
    digest: Option<bool>,
}

/// This node's place in the replicated update log (cluster mode only).
#[utoipa::path(get, path = "/v1/cluster", tag = "operations", params(StatusParams),
    responses((status = 200, body = ClusterStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<StatusParams>,
) -> ApiResult<Json<ClusterStatus>> {
    state.queries.require_oversight(&caller)?;
    // The chain's head counts every use answered before this request.
    state.queries.settle_uses().await?;
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApiError::not_found("this server runs as a single node (no --cluster)"));
    };
    // Without the log the node still tells where it is.
    let info = cluster.stream_info().await.ok();
    let position = cluster.position();
    let (records, digest, governance) = if q.digest.unwrap_or(false) {
        let store = state.store.clone();
        let (n, d) = tokio::task::spawn_blocking(move || store.records_digest()).await.map_err(ApiError::internal)??;
        let queries = state.queries.clone();
        let g = tokio::task::spawn_blocking(move || queries.governance_digest()).await.map_err(ApiError::internal)??;
        let p = state.queries.grants.policy();
        let governance = GovernanceState {
            grants: g.grants,
            disputes: g.disputes,
            responsible: g.responsible,
            accounts: g.accounts,
            digest: g.digest,
            policy: format!(
                "grant_reply_days={} dispute_days={} deemed_approval={} responsible_max_age_days={}",
                p.grant_reply_days, p.dispute_days, p.deemed_approval, p.responsible_max_age_days
            ),
        };
        (Some(n), Some(d), Some(governance))
    } else {
        (None, None, None)
    };
    let cfg = cluster.config();
    let audit_chains = if q.digest.unwrap_or(false) {
        let store = state.store.clone();
        let (local, remote) = tokio::task::spawn_blocking(move || -> basedata_store::Result<_> {
            Ok((store.audit_head()?, store.remote_chains()?))
        })
        .await
        .map_err(ApiError::internal)??;
        let head = |h: basedata_store::audit::ChainHead| ChainHeadDoc { seq: h.seq, hash: hex::encode(h.hash) };
        let mut chains: std::collections::BTreeMap<String, ChainHeadDoc> =
            remote.into_iter().map(|(node, c)| (node, head(c.head))).collect();
        chains.insert(cfg.node.clone(), head(local));
        Some(chains)
    } else {
        None
    };
    let audit = {
        let st = &cluster.audit.stats;
        let head = state.store.audit_head().map(|h| h.seq).unwrap_or(0).max(st.head.load(Relaxed));
        let shipped = st.shipped.load(Relaxed);
        // Read here, not from the shipper: it may not be reading at all
        // (the log was never reached).
        let oldest = if head > shipped {
            state.store.audit_ship_batch(&cfg.node, Default::default(), shipped + 1, shipped + 1, 1, 1).ok().and_then(|b| b.oldest_at()).unwrap_or(0)
        } else {
            0
        };
        let now = state.store.clock().now_micros();
        ClusterAudit {
            head,
            shipped,
            unshipped: head.saturating_sub(shipped),
            oldest_unshipped_age_ms: if oldest > 0 && head > shipped { (now.saturating_sub(oldest).max(0) / 1_000) as u64 } else { 0 },
            ship_lag_max_ms: st.lag_max_us.load(Relaxed) as f64 / 1_000.0,
            ship_lag_p99_ms: st.lag_p99_us() as f64 / 1_000.0,
            shipped_entries: st.shipped_entries.load(Relaxed),
            messages: st.messages.load(Relaxed),
            failures: st.failures.load(Relaxed),
            remote_appended: st.remote_appended.load(Relaxed),
        }
    };
    let c = info.as_ref().and_then(|i| i.cluster.clone()).unwrap_or_default();
    let state_of = |f: fn(&async_nats::jetstream::stream::State) -> u64| info.as_ref().map(|i| f(&i.state));
    Ok(Json(ClusterStatus {
        node: cfg.node.clone(),
        stream: cfg.stream.clone(),
        partitions: cfg.partitions,
        serves: cfg.served_partitions(),
        position,
        stream_first: state_of(|s| s.first_sequence),
        stream_last: state_of(|s| s.last_sequence),
        lag: state_of(|s| s.last_sequence).map(|l| l.saturating_sub(position)),
        leader: c.leader,
        replicas: c
            .replicas
            .into_iter()
            .map(|r| ClusterReplica { name: r.name, current: r.current, offline: r.offline, lag: r.lag })
            .collect(),
        connected: cluster.healthy(),
        records,
        digest,
        audit,
        audit_chains,
        governance,
    }))
}

/// In cluster mode: waits for `X-Basedata-Min-Position` (up to
/// `read_wait_ms`, then `503 unavailable`), and tags the answer with
/// `X-Basedata-Position`, the position this node had applied before the
/// request ran (what the answer reflects at least). A position past the
/// end of the update log, which no write has been given and no node could
/// serve, is `400 invalid_value` at once.
pub async fn position(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(req).await;
    };
    if let Some(v) = req.headers().get(MIN_POSITION_HEADER) {
        let Some(want) = v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
            return ApiError::invalid_value(format!("{MIN_POSITION_HEADER} must be an unsigned integer")).into_response();
        };
        let wait = Duration::from_millis(cluster.config().read_wait_ms);
        let asked = std::time::Instant::now();
        if let Err(last) = cluster.log_reaches(want, wait).await {
            return ApiError::invalid_value(format!(
                "{MIN_POSITION_HEADER} {want} is past the end of the update log ({last}): no write was given that position"
            ))
            .with_details(serde_json::json!({ "wanted": want, "log_end": last }))
            .into_response();
        }
        if !cluster.wait_for(want, wait.saturating_sub(asked.elapsed())).await {
            let have = cluster.position();
            return ApiError::unavailable(format!("this node has applied the update log up to {have}, not yet {want}; retry or ask another node"))
                .with_details(serde_json::json!({ "position": have, "wanted": want }))
                .into_response();
        }
    }
    let at = cluster.position();
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(POSITION_HEADER, HeaderValue::from(at));
    resp
}
