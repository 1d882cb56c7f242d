//! Sharing governance over HTTP: conditional-sharing grants (apply,
//! decide, revoke, list) and disputes (file, resolve, list). The rules are
//! the use cases' (`basedata_query::governance`); here requests are read
//! and grants and disputes rendered, deadlines as CST dates.

use super::schema::{
    DecisionRequest, DisputeDoc, DisputeList, DisputeRequest, ErrorBody, GrantDoc, GrantList, GrantRequest,
    ResolutionDoc, ResolutionRequest, RevokeRequest,
};
use super::subjects::json_body;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use basedata_query::gov::{Dispute, Grant, GrantKind};
use basedata_query::governance::{Application, DisputeFiling};
use basedata_store::value::{format_date, format_datetime};
use serde::Deserialize;

pub fn grant_doc(g: &Grant, state: &AppState) -> GrantDoc {
    let now = state.queries.grants.now();
    GrantDoc {
        id: g.id.clone(),
        department: g.department.clone(),
        dataset: g.dataset.clone(),
        kind: g.kind.as_str().into(),
        fields: g.fields.clone(),
        purpose: g.purpose.clone(),
        purpose_code: g.purpose_code.clone(),
        legal_basis: g.legal_basis.clone(),
        state: g.effective_state(now, &state.queries.grants.policy()).as_str().into(),
        created_at: format_datetime(g.created_at),
        due: format_date(g.due_date()),
        decided_at: g.decided_at.map(format_datetime),
        decided_by: g.decided_by.clone(),
        decided_operator: g.decided_operator.clone(),
        decided_operator_source: super::audit::operator_source(g.decided_operator.as_deref(), g.decided_operator_verified),
        reason: g.reason.clone(),
        revoked_at: g.revoked_at.map(format_datetime),
        revoked_by: g.revoked_by.clone(),
    }
}

/// Apply for conditional fields of a dataset, or subscribe to its changes (consumer).
#[utoipa::path(post, path = "/v1/grants", tag = "governance", request_body = GrantRequest,
    responses((status = 201, body = GrantDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn apply(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<GrantDoc>)> {
    let req: GrantRequest = json_body(&body)?;
    let kind = match req.kind.as_deref() {
        None => GrantKind::Fields,
        Some(k) => GrantKind::parse(k).ok_or_else(|| ApiError::invalid_value("kind is fields or subscription"))?,
    };
    let fields = match (kind, req.fields) {
        (GrantKind::Fields, None) => return Err(ApiError::invalid_body("fields is required: the conditional fields applied for")),
        (_, fields) => fields.unwrap_or_default(),
    };
    let application = Application {
        dataset: &req.dataset,
        kind,
        fields: &fields,
        purpose: req.purpose.as_deref(),
        legal_basis: req.legal_basis.as_deref(),
    };
    let g = state.queries.apply_grant(&caller, &application).await?;
    Ok((StatusCode::CREATED, Json(grant_doc(&g, &state))))
}

/// Approve or refuse a pending grant (the dataset's provider; a refusal gives reasons).
#[utoipa::path(post, path = "/v1/grants/{id}/decision", tag = "governance", request_body = DecisionRequest,
    params(("id" = String, Path)), responses((status = 200, body = GrantDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn decide(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<GrantDoc>> {
    let req: DecisionRequest = json_body(&body)?;
    let g = state.queries.decide_grant(&caller, &id, req.approve, req.reason.as_deref()).await?;
    Ok(Json(grant_doc(&g, &state)))
}

/// Revoke a grant (the dataset's provider or an administrator); it stops counting at once.
#[utoipa::path(post, path = "/v1/grants/{id}/revoke", tag = "governance", request_body = RevokeRequest,
    params(("id" = String, Path)), responses((status = 200, body = GrantDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<GrantDoc>> {
    let req: RevokeRequest = json_body(&body)?;
    let g = state.queries.revoke_grant(&caller, &id, req.reason.as_deref()).await?;
    Ok(Json(grant_doc(&g, &state)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Grants: pending, approved, rejected, deemed_approved, revoked. Disputes: open, resolved, overdue.
    state: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantListParams {
    /// pending, approved, rejected, deemed_approved, revoked.
    state: Option<String>,
    /// fields (conditional fields) or subscription (a dataset's change feed).
    kind: Option<String>,
}

/// Grants visible to the caller: its own, those on its datasets, or all for auditors and administrators.
#[utoipa::path(get, path = "/v1/grants", tag = "governance", params(GrantListParams),
    responses((status = 200, body = GrantList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_grants(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<GrantListParams>,
) -> ApiResult<Json<GrantList>> {
    let kind = match p.kind.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => Some(
            basedata_query::gov::GrantKind::parse(k)
                .ok_or_else(|| ApiError::invalid_value("kind is fields or subscription"))?,
        ),
        None => None,
    };
    let mut grants = state.queries.grants_list(&caller, p.state.as_deref())?;
    grants.retain(|g| kind.is_none_or(|k| g.kind == k));
    Ok(Json(GrantList { grants: grants.iter().map(|g| grant_doc(g, &state)).collect() }))
}

/// One grant.
#[utoipa::path(get, path = "/v1/grants/{id}", tag = "governance", params(("id" = String, Path)),
    responses((status = 200, body = GrantDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_grant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<GrantDoc>> {
    Ok(Json(grant_doc(&state.queries.grant(&caller, &id)?, &state)))
}

// ---- disputes ----

fn dispute_doc(d: &Dispute, state: &AppState) -> ApiResult<DisputeDoc> {
    let stored = state.queries.dispute_key(d)?;
    let key = stored.map(|k| k.as_str().to_owned());
    let id_type = stored.and_then(|k| k.other_doc_type()).map(|d| d.as_str().to_owned());
    let subject = basedata_store::keys::DocType::from_u8(d.doc).map(|t| t.subject().as_str().to_owned());
    let now = state.queries.grants.now();
    Ok(DisputeDoc {
        id: d.id.clone(),
        department: d.department.clone(),
        subject,
        key,
        id_type,
        dataset: d.dataset.clone(),
        field: d.field.clone(),
        claimed: d.claimed.clone(),
        note: d.note.clone(),
        state: if d.is_open() { "open" } else { "resolved" }.into(),
        overdue: d.is_overdue(now),
        created_at: format_datetime(d.created_at),
        due: format_date(d.due_date()),
        resolution: d.resolution.map(|r| ResolutionDoc {
            outcome: r.as_str().into(),
            note: d.resolution_note.clone(),
            at: d.resolved_at.map(format_datetime),
            by: d.resolved_by.clone(),
        }),
    })
}

/// File a dispute about a field of a record (consumer).
#[utoipa::path(post, path = "/v1/disputes", tag = "governance", request_body = DisputeRequest,
    responses((status = 201, body = DisputeDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn file_dispute(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<DisputeDoc>)> {
    let req: DisputeRequest = json_body(&body)?;
    let filing = DisputeFiling {
        subject: &req.subject,
        key: &req.key,
        id_type: req.id_type.as_deref(),
        dataset: &req.dataset,
        field: &req.field,
        claimed: &req.claimed,
        note: req.note.as_deref(),
    };
    let d = state.queries.file_dispute(&caller, &filing).await?;
    Ok((StatusCode::CREATED, Json(dispute_doc(&d, &state)?)))
}

/// Confirm the value or report its correction (the dataset's provider).
#[utoipa::path(post, path = "/v1/disputes/{id}/resolution", tag = "governance", request_body = ResolutionRequest,
    params(("id" = String, Path)), responses((status = 200, body = DisputeDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn resolve_dispute(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<DisputeDoc>> {
    let req: ResolutionRequest = json_body(&body)?;
    let d = state.queries.resolve_dispute(&caller, &id, &req.outcome, req.note.as_deref()).await?;
    Ok(Json(dispute_doc(&d, &state)?))
}

/// Disputes visible to the caller.
#[utoipa::path(get, path = "/v1/disputes", tag = "governance", params(ListParams),
    responses((status = 200, body = DisputeList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_disputes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<DisputeList>> {
    let all = state.queries.disputes(&caller, p.state.as_deref()).await?;
    let disputes = all.iter().map(|d| dispute_doc(d, &state)).collect::<ApiResult<_>>()?;
    Ok(Json(DisputeList { disputes }))
}
