//! Sharing governance over HTTP: conditional-sharing grants (apply,
//! decide, revoke, list) and disputes (file, resolve, list), each state
//! change committed together with its audit entry. Deadlines are counted
//! in working days on the configured calendar, in China Standard Time.

use super::commit::{commit_with, event};
use super::subjects::json_body;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::config::Role;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use basedata_query::gov::{cst_date, new_id, Dispute, Grant, GrantBook, GrantState, Resolution};
use basedata_store::catalog::Share;
use basedata_store::value::{format_date, format_datetime};
use basedata_store::{Action, AuditEvent, Subject, SubjectKey};
use super::schema::{
    DecisionRequest, DisputeDoc, DisputeList, DisputeRequest, ErrorBody, GrantDoc, GrantList, GrantRequest,
    ResolutionDoc, ResolutionRequest, RevokeRequest,
};
use serde::Deserialize;
use serde_json::Value;

fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", msg)
}

fn required_text(name: &str, v: &Option<String>) -> ApiResult<String> {
    match v.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() && t.chars().count() <= 2000 => Ok(t.to_owned()),
        Some(t) if !t.is_empty() => Err(ApiError::invalid_value(format!("{name} is limited to 2000 characters"))),
        _ => Err(ApiError::invalid_value(format!("{name} is required"))),
    }
}

pub fn grant_doc(g: &Grant, state: &AppState) -> GrantDoc {
    let now = state.grant_book.now();
    GrantDoc {
        id: g.id.clone(),
        department: g.department.clone(),
        dataset: g.dataset.clone(),
        fields: g.fields.clone(),
        purpose: g.purpose.clone(),
        legal_basis: g.legal_basis.clone(),
        state: g.effective_state(now, state.grant_book.policy()).as_str().into(),
        created_at: format_datetime(g.created_at),
        due: format_date(g.due_date()),
        decided_at: g.decided_at.map(format_datetime),
        decided_by: g.decided_by.clone(),
        reason: g.reason.clone(),
        revoked_at: g.revoked_at.map(format_datetime),
        revoked_by: g.revoked_by.clone(),
    }
}

fn grant_event(caller: &Caller, g: &Grant, outcome: &str) -> AuditEvent {
    let mut ev = event(caller, None, Action::Grant, None);
    ev.purpose = g.purpose.clone();
    ev.datasets = vec![g.dataset.clone()];
    ev.fields = g.fields.clone();
    ev.outcome = format!("{outcome} {}", g.id);
    ev
}

async fn commit_grant(state: &AppState, g: Grant, ev: AuditEvent) -> ApiResult<Grant> {
    commit_with(state, Vec::new(), vec![ev], GrantBook::write(&g)).await?;
    state.grant_book.put(g.clone());
    Ok(g)
}

/// Apply for conditional fields of a dataset (consumer).
#[utoipa::path(post, path = "/v1/grants", tag = "governance", request_body = GrantRequest,
    responses((status = 201, body = GrantDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn apply(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<GrantDoc>)> {
    let req: GrantRequest = json_body(&body)?;
    if !caller.department.has(Role::Consumer) {
        return Err(ApiError::forbidden("only consumer departments apply for conditional sharing"));
    }
    let ds = state.catalog.dataset(&req.dataset).ok_or_else(|| ApiError::unknown_dataset(&req.dataset))?;
    if req.fields.is_empty() {
        return Err(ApiError::invalid_value("fields must name at least one conditional field"));
    }
    let mut fields: Vec<String> = Vec::new();
    for name in &req.fields {
        let f = ds.field(name).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "unknown_field", format!("dataset {} has no field {name}", ds.id))
        })?;
        match f.share {
            Share::Conditional => {}
            Share::Unconditional => {
                return Err(ApiError::invalid_value(format!("field {name} is shared unconditionally: no grant is needed")))
            }
            Share::None => {
                return Err(ApiError::invalid_value(format!("field {name} is not shared (negative list); only verification is possible")))
            }
        }
        if !fields.contains(name) {
            fields.push(name.clone());
        }
    }
    let purpose = required_text("purpose", &req.purpose)?;
    let legal_basis = required_text("legal_basis", &req.legal_basis)?;
    let _guard = state.gov_lock.lock().await;
    let now = state.grant_book.now();
    let g = Grant {
        id: new_id(),
        department: caller.department.id.clone(),
        dataset: ds.id.clone(),
        fields,
        purpose,
        legal_basis,
        state: GrantState::Pending,
        created_at: now,
        due: state.grant_book.due_for(&state.calendar, now).to_julian_day(),
        decided_at: None,
        decided_by: None,
        reason: None,
        revoked_at: None,
        revoked_by: None,
    };
    let ev = grant_event(&caller, &g, "applied");
    let g = commit_grant(&state, g, ev).await?;
    Ok((StatusCode::CREATED, Json(grant_doc(&g, &state))))
}

fn find_grant(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Grant> {
    let g = state.grant_book.get(id).ok_or_else(|| ApiError::not_found("no such grant"))?;
    if visible_grant(state, caller, &g) {
        Ok(g)
    } else {
        Err(ApiError::not_found("no such grant"))
    }
}

fn is_provider_of(state: &AppState, caller: &Caller, dataset: &str) -> bool {
    caller.department.has(Role::Provider) && state.catalog.dataset(dataset).is_some_and(|d| d.provider == caller.department.id)
}

fn visible_grant(state: &AppState, caller: &Caller, g: &Grant) -> bool {
    caller.department.has(Role::Admin)
        || caller.department.has(Role::Auditor)
        || g.department == caller.department.id
        || is_provider_of(state, caller, &g.dataset)
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
    let _guard = state.gov_lock.lock().await;
    let mut g = find_grant(&state, &caller, &id)?;
    if !is_provider_of(&state, &caller, &g.dataset) {
        return Err(ApiError::forbidden(format!("only the provider of {} decides on this grant", g.dataset)));
    }
    let now = state.grant_book.now();
    match g.effective_state(now, state.grant_book.policy()) {
        GrantState::Pending => {}
        other => return Err(conflict(format!("the grant is {}; only pending grants are decided", other.as_str()))),
    }
    let reason = req.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
    if !req.approve && reason.is_none() {
        return Err(ApiError::invalid_value("a refusal must give its reasons"));
    }
    g.state = if req.approve { GrantState::Approved } else { GrantState::Rejected };
    g.decided_at = Some(now);
    g.decided_by = Some(caller.department.id.clone());
    g.reason = reason;
    let ev = grant_event(&caller, &g, g.state.as_str());
    let g = commit_grant(&state, g, ev).await?;
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
    let _guard = state.gov_lock.lock().await;
    let mut g = find_grant(&state, &caller, &id)?;
    if !(is_provider_of(&state, &caller, &g.dataset) || caller.department.has(Role::Admin)) {
        return Err(ApiError::forbidden("only the dataset's provider or an administrator revokes a grant"));
    }
    let reason = required_text("reason", &req.reason)?;
    let now = state.grant_book.now();
    match g.effective_state(now, state.grant_book.policy()) {
        GrantState::Revoked | GrantState::Rejected => {
            return Err(conflict(format!("the grant is already {}", g.state.as_str())))
        }
        _ => {}
    }
    g.state = GrantState::Revoked;
    g.revoked_at = Some(now);
    g.revoked_by = Some(caller.department.id.clone());
    g.reason = Some(reason);
    let ev = grant_event(&caller, &g, "revoked");
    let g = commit_grant(&state, g, ev).await?;
    Ok(Json(grant_doc(&g, &state)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Grants: pending, approved, rejected, deemed_approved, revoked. Disputes: open, resolved, overdue.
    state: Option<String>,
}

/// Grants visible to the caller: its own, those on its datasets, or all for auditors and administrators.
#[utoipa::path(get, path = "/v1/grants", tag = "governance", params(ListParams),
    responses((status = 200, body = GrantList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_grants(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<GrantList>> {
    let want = match p.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(GrantState::parse(s).ok_or_else(|| {
            ApiError::invalid_value("state is one of pending, approved, rejected, deemed_approved, revoked")
        })?),
        None => None,
    };
    let now = state.grant_book.now();
    let grants: Vec<GrantDoc> = state
        .grant_book
        .all()
        .iter()
        .filter(|g| visible_grant(&state, &caller, g))
        .filter(|g| want.is_none_or(|w| g.effective_state(now, state.grant_book.policy()) == w))
        .map(|g| grant_doc(g, &state))
        .collect();
    Ok(Json(GrantList { grants }))
}

/// One grant.
#[utoipa::path(get, path = "/v1/grants/{id}", tag = "governance", params(("id" = String, Path)),
    responses((status = 200, body = GrantDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_grant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<GrantDoc>> {
    Ok(Json(grant_doc(&find_grant(&state, &caller, &id)?, &state)))
}

/// Records grants that became deemed approved (the reply deadline passed
/// without a decision), each with its audit entry. The access decision
/// already honours them from the deadline on; this makes the record match.
pub async fn sweep_deemed(state: &AppState) -> ApiResult<usize> {
    let _guard = state.gov_lock.lock().await;
    let overdue = state.grant_book.overdue_pending();
    for mut g in overdue.iter().cloned() {
        g.state = GrantState::DeemedApproved;
        let ev = AuditEvent {
            department: "system".into(),
            operator: None,
            purpose: g.purpose.clone(),
            action: Action::Grant,
            key: None,
            datasets: vec![g.dataset.clone()],
            fields: g.fields.clone(),
            outcome: format!("deemed_approved {}", g.id),
            key_mapped: false,
        };
        commit_with(state, Vec::new(), vec![ev], GrantBook::write(&g)).await?;
        state.grant_book.put(g);
    }
    Ok(overdue.len())
}

// ---- disputes ----

fn dispute_doc(d: &Dispute, state: &AppState) -> ApiResult<DisputeDoc> {
    let key = state.store.resolve(&d.pid)?.map(|k| k.as_str().to_owned());
    let subject = basedata_store::keys::DocType::from_u8(d.doc).map(|t| t.subject().as_str().to_owned());
    let now = state.grant_book.now();
    Ok(DisputeDoc {
        id: d.id.clone(),
        department: d.department.clone(),
        subject,
        key,
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
    if !caller.department.has(Role::Consumer) {
        return Err(ApiError::forbidden("only consumer departments file disputes"));
    }
    let subject: Subject =
        req.subject.parse().map_err(|_| ApiError::invalid_value("subject is person or entity"))?;
    let key = SubjectKey::parse(subject, &req.key).map_err(ApiError::invalid_key)?;
    let ds = state
        .catalog
        .dataset(&req.dataset)
        .filter(|d| d.subject == subject)
        .ok_or_else(|| ApiError::unknown_dataset(&req.dataset))?;
    if ds.field(&req.field).is_none() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "unknown_field", format!("dataset {} has no field {}", ds.id, req.field)));
    }
    let claimed = match &req.claimed {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => req.claimed.to_string(),
        _ => return Err(ApiError::invalid_value("claimed is the value the consumer believes correct (a string)")),
    };
    if claimed.chars().count() > 2000 {
        return Err(ApiError::invalid_value("claimed is limited to 2000 characters"));
    }
    let note = req.note.unwrap_or_default();
    let _guard = state.gov_lock.lock().await;
    let now = state.grant_book.now();
    let due = state.calendar.add_working_days(cst_date(now), state.grant_book.policy().dispute_days);
    let d = Dispute {
        id: new_id(),
        department: caller.department.id.clone(),
        operator: caller.operator.clone(),
        doc: key.doc_type().as_u8(),
        pid: state.store.pseudonym(&key),
        dataset: ds.id.clone(),
        field: req.field.clone(),
        claimed,
        note,
        created_at: now,
        opened_seq: state.store.last_seq(),
        due: due.to_julian_day(),
        resolution: None,
        resolution_note: None,
        resolved_at: None,
        resolved_by: None,
    };
    let mut extra = d.write();
    state.store.seal_into(&mut extra, &key);
    let mut ev = event(&caller, None, Action::Dispute, Some(key));
    ev.purpose = "dispute".into();
    ev.datasets = vec![ds.id.clone()];
    ev.fields = vec![d.field.clone()];
    ev.outcome = format!("opened {}", d.id);
    commit_with(&state, Vec::new(), vec![ev], extra).await?;
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
    let outcome = match req.outcome.as_str() {
        "confirmed" => Resolution::Confirmed,
        "corrected" => Resolution::Corrected,
        _ => return Err(ApiError::invalid_value("outcome is confirmed or corrected")),
    };
    let _guard = state.gov_lock.lock().await;
    let mut d = basedata_query::gov::load_dispute(&**state.store.engine(), &id)?
        .filter(|d| visible_dispute(&state, &caller, d))
        .ok_or_else(|| ApiError::not_found("no such dispute"))?;
    if !is_provider_of(&state, &caller, &d.dataset) {
        return Err(ApiError::forbidden(format!("only the provider of {} resolves this dispute", d.dataset)));
    }
    if !d.is_open() {
        return Err(conflict("the dispute is already resolved"));
    }
    let key = state
        .store
        .resolve(&d.pid)?
        .ok_or_else(|| ApiError::internal("dispute subject without key mapping"))?;
    if outcome == Resolution::Corrected {
        let seq = state.store.record_seq(&key, &d.dataset)?;
        if seq.is_none_or(|s| s <= d.opened_seq) {
            return Err(conflict(
                "a correction needs an update of this record after the dispute was opened: send it to the updates endpoint first",
            ));
        }
    }
    let now = state.grant_book.now();
    d.resolution = Some(outcome);
    d.resolution_note = req.note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    d.resolved_at = Some(now);
    d.resolved_by = Some(caller.department.id.clone());
    let mut ev = event(&caller, None, Action::Dispute, Some(key));
    ev.purpose = "dispute".into();
    ev.datasets = vec![d.dataset.clone()];
    ev.fields = vec![d.field.clone()];
    ev.outcome = format!("{} {}", outcome.as_str(), d.id);
    commit_with(&state, Vec::new(), vec![ev], d.write()).await?;
    Ok(Json(dispute_doc(&d, &state)?))
}

fn visible_dispute(state: &AppState, caller: &Caller, d: &Dispute) -> bool {
    caller.department.has(Role::Admin)
        || caller.department.has(Role::Auditor)
        || d.department == caller.department.id
        || is_provider_of(state, caller, &d.dataset)
}

/// Disputes visible to the caller.
#[utoipa::path(get, path = "/v1/disputes", tag = "governance", params(ListParams),
    responses((status = 200, body = DisputeList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_disputes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<DisputeList>> {
    let now = state.grant_book.now();
    let filter: fn(&Dispute, i64) -> bool = match p.state.as_deref().unwrap_or("") {
        "" => |_, _| true,
        "open" => |d, _| d.is_open(),
        "resolved" => |d, _| !d.is_open(),
        "overdue" => |d, now| d.is_overdue(now),
        _ => return Err(ApiError::invalid_value("state is one of open, resolved, overdue")),
    };
    let store = state.store.clone();
    let all = tokio::task::spawn_blocking(move || basedata_query::gov::all_disputes(&**store.engine()))
        .await
        .map_err(ApiError::internal)??;
    let mut out = Vec::new();
    for d in all.iter().filter(|d| visible_dispute(&state, &caller, d) && filter(d, now)) {
        out.push(dispute_doc(d, &state)?);
    }
    Ok(Json(DisputeList { disputes: out }))
}
