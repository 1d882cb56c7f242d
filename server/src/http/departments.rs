//! The departments over HTTP: every authenticated department sees every
//! department's id, name, roles, purposes and responsible persons (never
//! a credential); an administrator records a department's responsible
//! persons. The governance policy in force (deadlines, deemed approval)
//! is shown to all and switched by administrators. The rules are
//! `basedata_query::departments`' and `basedata_query::replicated`'s.

use super::schema::{DepartmentDoc, DepartmentList, ErrorBody, PolicyDoc, PolicyRequest, ResponsiblePersonDoc, ResponsibleRequest};
use super::subjects::json_body;
use super::{ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use basedata_query::caller::ResponsiblePerson;
use basedata_query::departments::DepartmentView;
use basedata_store::value::{format_date, format_datetime};

fn doc(v: DepartmentView) -> DepartmentDoc {
    DepartmentDoc {
        id: v.id,
        name: v.name,
        roles: v.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        purposes: v.purposes,
        responsible: v
            .responsible
            .into_iter()
            .map(|p| ResponsiblePersonDoc { name: p.name, post: p.post, contact: p.contact, since: p.since })
            .collect(),
        responsible_as_of: v.responsible_as_of.map(format_date),
        responsible_source: v.responsible_source.map(str::to_owned),
        responsible_updated_at: v.responsible_updated.as_ref().map(|(t, _)| format_datetime(*t)),
        responsible_updated_by: v.responsible_updated.map(|(_, by)| by),
    }
}

/// Every department with its roles, purposes and responsible persons.
#[utoipa::path(get, path = "/v1/departments", tag = "governance",
    responses((status = 200, body = DepartmentList), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<DepartmentList>> {
    let views = state.queries.departments(&caller)?;
    Ok(Json(DepartmentList { departments: views.into_iter().map(doc).collect() }))
}

/// Record a department's responsible persons (administrators), replacing
/// the previous record; audited.
#[utoipa::path(put, path = "/v1/departments/{id}/responsible", tag = "governance", request_body = ResponsibleRequest,
    params(("id" = String, Path, description = "Department id")),
    responses((status = 200, body = DepartmentDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_responsible(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<DepartmentDoc>> {
    let req: ResponsibleRequest = json_body(&body)?;
    let persons = req
        .persons
        .into_iter()
        .map(|p| ResponsiblePerson { name: p.name, post: p.post, contact: p.contact, since: p.since })
        .collect();
    let v = state.queries.set_responsible(&caller, &id, persons).await?;
    Ok(Json(doc(v)))
}

fn policy_doc(state: &AppState) -> PolicyDoc {
    let (p, record) = state.queries.policy();
    PolicyDoc {
        grant_reply_days: p.grant_reply_days,
        dispute_days: p.dispute_days,
        deemed_approval: p.deemed_approval,
        responsible_max_age_days: p.responsible_max_age_days,
        source: if record.is_some() { "api" } else { "config" }.into(),
        set_at: record.as_ref().map(|r| format_datetime(r.set_at)),
        set_by: record.map(|r| r.set_by),
    }
}

/// The governance policy in force: reply deadlines of grants and disputes,
/// the deemed-approval rule, and where it comes from.
#[utoipa::path(get, path = "/v1/policy", tag = "governance",
    responses((status = 200, body = PolicyDoc), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn policy(State(state): State<AppState>, Extension(_caller): Extension<Caller>) -> Json<PolicyDoc> {
    Json(policy_doc(&state))
}

/// Switch the governance policy (administrators): it replaces the
/// configuration's from now on, on every node of a cluster; audited.
#[utoipa::path(put, path = "/v1/policy", tag = "governance", request_body = PolicyRequest,
    responses((status = 200, body = PolicyDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn switch_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult<Json<PolicyDoc>> {
    let req: PolicyRequest = json_body(&body)?;
    let change = basedata_query::replicated::PolicyChange {
        grant_reply_days: req.grant_reply_days,
        dispute_days: req.dispute_days,
        deemed_approval: req.deemed_approval,
        responsible_max_age_days: req.responsible_max_age_days,
    };
    state.queries.switch_policy(&caller, &change).await?;
    Ok(Json(policy_doc(&state)))
}
