//! `GET /v1/audit` (who did what, to whom, why) and `GET /v1/audit/verify`
//! (the hash chain is intact), for auditors and administrators.

use super::subjects::parse_time;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::config::Role;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use basedata_store::audit::{AuditEntry, AuditQuery};
use basedata_store::keys::{EntityKey, PersonKey};
use basedata_store::value::format_datetime;
use basedata_store::SubjectKey;
use serde::Deserialize;
use serde_json::{json, Value};

pub const MAX_AUDIT_LIMIT: usize = 10_000;

fn require_auditor(caller: &Caller) -> ApiResult<()> {
    if caller.department.has(Role::Auditor) || caller.department.has(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::forbidden("the audit log is for auditors and administrators"))
    }
}

#[derive(Deserialize)]
pub struct AuditParams {
    department: Option<String>,
    key: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    after: Option<u64>,
}

/// A key of either kind; a citizen ID is tried first (both are 18
/// characters, and a string that is valid as both is rare and ambiguous).
fn any_key(s: &str) -> ApiResult<SubjectKey> {
    match PersonKey::parse(s) {
        Ok(k) => Ok(SubjectKey::Person(k)),
        Err(pe) => EntityKey::parse(s).map(SubjectKey::Entity).map_err(|_| ApiError::invalid_key(pe)),
    }
}

pub fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "seq": e.seq,
        "at": format_datetime(e.at),
        "department": e.department,
        "operator": e.operator,
        "purpose": e.purpose,
        "action": e.action.as_str(),
        "subject": e.subject.map(|s| s.as_str()),
        "key": e.key.map(|k| k.as_str().to_owned()),
        "datasets": e.datasets,
        "fields": e.fields,
        "outcome": e.outcome,
        "hash": hex::encode(e.hash),
    })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<AuditParams>,
) -> ApiResult<Json<Value>> {
    require_auditor(&caller)?;
    let q = AuditQuery {
        department: p.department.filter(|d| !d.is_empty()),
        key: p.key.as_deref().filter(|k| !k.is_empty()).map(any_key).transpose()?,
        from: p.from.as_deref().map(|t| parse_time("from", t)).transpose()?,
        to: p.to.as_deref().map(|t| parse_time("to", t)).transpose()?,
        after: p.after.unwrap_or(0),
        limit: p.limit.unwrap_or(100).clamp(1, MAX_AUDIT_LIMIT),
    };
    let store = state.store.clone();
    let entries = tokio::task::spawn_blocking(move || store.audit_query(&q)).await.map_err(ApiError::internal)??;
    let next = entries.last().map(|e| e.seq);
    Ok(Json(json!({"entries": entries.iter().map(entry_json).collect::<Vec<_>>(), "next": next})))
}

pub async fn verify(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<Value>> {
    require_auditor(&caller)?;
    let store = state.store.clone();
    let check = tokio::task::spawn_blocking(move || store.audit_verify()).await.map_err(ApiError::internal)??;
    let mut body = json!({"ok": check.ok, "entries": check.entries, "head": hex::encode(check.head)});
    if let Some(p) = check.problem {
        body["problem"] = json!(p);
    }
    Ok(Json(body))
}
