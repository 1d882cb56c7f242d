//! `GET /v1/audit` (who did what, to whom, why) and `GET /v1/audit/verify`
//! (the hash chain is intact), for auditors and administrators.

use super::subjects::parse_time;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use basedata_store::audit::{AuditEntry, AuditQuery};
use basedata_store::keys::{DocType, EntityKey, PersonKey};
use basedata_store::value::format_datetime;
use basedata_store::SubjectKey;
use serde::Deserialize;
use super::schema::{AuditCheck, AuditEntryDoc, AuditList, ErrorBody, IdType};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this department's uses.
    department: Option<String>,
    /// Only uses concerning this subject (citizen ID number or credit code,
    /// or the number of the document `id_type` names).
    key: Option<String>,
    /// The document type of `key` (default: a citizen ID number, else a
    /// credit code).
    #[param(value_type = Option<IdType>)]
    id_type: Option<String>,
    /// RFC 3339, inclusive.
    from: Option<String>,
    /// RFC 3339, exclusive.
    to: Option<String>,
    /// 1–10000, default 100.
    limit: Option<usize>,
    /// Entries after this sequence number (paging).
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

/// The key of `?key=`, as the document `?id_type=` names or else as
/// [`any_key`] reads it.
fn query_key(key: &str, id_type: Option<&str>) -> ApiResult<SubjectKey> {
    let Some(name) = id_type else { return any_key(key) };
    let doc = DocType::ALL.into_iter().find(|d| d.as_str() == name).ok_or_else(|| {
        let allowed: Vec<_> = DocType::ALL.iter().map(|d| d.as_str()).collect();
        ApiError::invalid_value(format!("id_type is one of {}", allowed.join(", ")))
            .with_details(serde_json::json!({ "allowed": allowed }))
    })?;
    SubjectKey::parse_doc(doc, key).map_err(ApiError::invalid_key)
}

pub fn entry_doc(e: &AuditEntry) -> AuditEntryDoc {
    AuditEntryDoc {
        seq: e.seq,
        at: format_datetime(e.at),
        department: e.department.clone(),
        operator: e.operator.clone(),
        operator_source: e.operator.as_ref().map(|_| if e.operator_verified { "verified" } else { "declared" }.to_owned()),
        purpose: e.purpose.clone(),
        purpose_code: e.purpose_code.clone(),
        action: e.action.as_str().into(),
        subject: e.subject.map(|s| s.as_str().to_owned()),
        key: e.key.map(|k| k.as_str().to_owned()),
        id_type: e.key.and_then(|k| k.other_doc_type()).map(|d| d.as_str().to_owned()),
        datasets: e.datasets.clone(),
        fields: e.fields.clone(),
        outcome: e.outcome.clone(),
        hash: hex::encode(e.hash),
    }
}

/// Audit entries: who used which subject's data, when, why and how.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<AuditParams>,
) -> ApiResult<Json<AuditList>> {
    state.queries.require_oversight(&caller)?;
    let q = AuditQuery {
        department: p.department.filter(|d| !d.is_empty()),
        key: p.key.as_deref().filter(|k| !k.is_empty()).map(|k| query_key(k, p.id_type.as_deref())).transpose()?,
        from: p.from.as_deref().map(|t| parse_time("from", t)).transpose()?,
        to: p.to.as_deref().map(|t| parse_time("to", t)).transpose()?,
        after: p.after.unwrap_or(0),
        limit: p.limit.unwrap_or(100),
    };
    let entries = state.queries.audit(&caller, q).await?;
    let next = entries.last().map(|e| e.seq);
    Ok(Json(AuditList { entries: entries.iter().map(entry_doc).collect(), next }))
}

/// Recomputes the hash chain of the whole audit log.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditCheck), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<AuditCheck>> {
    let check = state.queries.audit_check(&caller).await?;
    Ok(Json(AuditCheck { ok: check.ok, entries: check.entries, head: hex::encode(check.head), problem: check.problem }))
}
