//! `GET /v1/audit` (who did what, to whom, why) and `GET /v1/audit/verify`
//! (the hash chain is intact), for auditors and administrators.

use super::subjects::parse_time;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use basedata_store::audit::{AuditCursor, AuditEntry, AuditQuery};
use basedata_store::keys::{DocType, EntityKey, PersonKey};
use basedata_store::value::format_datetime;
use basedata_store::SubjectKey;
use serde::Deserialize;
use super::schema::{ApprovalDoc, AuditCheck, AuditEntryDoc, AuditList, ChainCheckDoc, ErrorBody, IdType};
use basedata_query::oversight::Approval;

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
    /// 1–10000, default 100; any other is refused (`invalid_value`).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Entries after this one (paging): the `cursor` of the page before
    /// (`<at µs>.<seq>.<node>`), or on a single node also its `next`, a
    /// sequence number (in cluster mode, a number names an entry of this
    /// node's own chain and the page starts after its place in the order).
    after: Option<String>,
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

/// How the platform knows an operator (or approver): `verified`, a
/// console session; `declared`, the request's `X-Operator`. `None`
/// without one.
pub fn operator_source(operator: Option<&str>, verified: bool) -> Option<String> {
    operator.map(|_| if verified { "verified" } else { "declared" }.to_owned())
}

/// `local`: this node's name in cluster mode, for its own entries;
/// `approvals`: the grants the use relied on.
pub fn entry_doc(e: &AuditEntry, local: Option<&str>, approvals: Vec<Approval>) -> AuditEntryDoc {
    AuditEntryDoc {
        node: e.node.clone().or_else(|| local.map(str::to_owned)),
        seq: e.seq,
        at: format_datetime(e.at),
        department: e.department.clone(),
        operator: e.operator.clone(),
        operator_source: operator_source(e.operator.as_deref(), e.operator_verified),
        purpose: e.purpose.clone(),
        purpose_code: e.purpose_code.clone(),
        action: e.action.as_str().into(),
        subject: e.subject.map(|s| s.as_str().to_owned()),
        key: e.key.map(|k| k.as_str().to_owned()),
        id_type: e.key.and_then(|k| k.other_doc_type()).map(|d| d.as_str().to_owned()),
        datasets: e.datasets.clone(),
        fields: e.fields.clone(),
        outcome: e.outcome.clone(),
        approvals: approvals
            .into_iter()
            .map(|a| ApprovalDoc {
                state: a.dataset.as_ref().map(|_| if a.deemed { "deemed_approved" } else { "approved" }.to_owned()),
                approver_source: operator_source(a.approver.as_deref(), a.approver_verified),
                grant: a.grant,
                dataset: a.dataset,
                approved_by: a.by,
                approver: a.approver,
                since: a.since.map(format_datetime),
            })
            .collect(),
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
    let local = state.node_name();
    let (after, cursor) = match p.after.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        None => (0, None),
        Some(a) => match a.parse::<u64>() {
            Ok(seq) => (seq, None),
            Err(_) => (
                0,
                Some(AuditCursor::parse(a).ok_or_else(|| {
                    ApiError::invalid_value("after is a sequence number or a cursor <at µs>.<seq>.<node> from an earlier page")
                })?),
            ),
        },
    };
    let q = AuditQuery {
        department: p.department.filter(|d| !d.is_empty()),
        key: p.key.as_deref().filter(|k| !k.is_empty()).map(|k| query_key(k, p.id_type.as_deref())).transpose()?,
        from: p.from.as_deref().map(|t| parse_time("from", t)).transpose()?,
        to: p.to.as_deref().map(|t| parse_time("to", t)).transpose()?,
        after,
        limit: p.limit.unwrap_or(100),
        cursor,
        node: local.clone(),
    };
    let entries = state.queries.audit(&caller, q).await?;
    let last = entries.last();
    let next = if local.is_none() { last.map(|e| e.seq) } else { None };
    let cursor = last.map(|e| AuditCursor::of(e, local.as_deref().unwrap_or("")).to_string());
    Ok(Json(AuditList { entries: entries.iter().zip(state.queries.approvals(&entries)).map(|(e, a)| entry_doc(e, local.as_deref(), a)).collect(), next, cursor }))
}

/// Where a chain is checked from, when entries were removed before it.
fn starts_after(c: &basedata_store::audit::ChainCheck) -> Option<u64> {
    (c.starts_after > 0).then_some(c.starts_after)
}

/// Recomputes the hash chain of the whole audit log, and in cluster mode
/// every other node's chain held here.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditCheck), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<AuditCheck>> {
    let (check, remote) = state.queries.audit_check_all(&caller).await?;
    let local = state.node_name();
    let doc = |node: Option<String>, c: &basedata_store::audit::ChainCheck| ChainCheckDoc {
        node,
        entries: c.entries,
        starts_after: starts_after(c),
        head: hex::encode(c.head),
        ok: c.ok,
        problem: c.problem.clone(),
    };
    let mut chains = vec![doc(local, &check)];
    chains.extend(remote.iter().map(|(n, c)| doc(Some(n.clone()), c)));
    Ok(Json(AuditCheck {
        ok: chains.iter().all(|c| c.ok),
        entries: check.entries,
        starts_after: starts_after(&check),
        head: hex::encode(check.head),
        problem: check.problem,
        chains,
    }))
}
