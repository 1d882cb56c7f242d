//! The departments over HTTP: every authenticated department sees every
//! department's id, name, roles, purposes and responsible persons (never
//! a credential); an administrator records a department's responsible
//! persons. The rules are `basedata_query::departments`'.

use super::schema::{DepartmentDoc, DepartmentList, ErrorBody, ResponsiblePersonDoc, ResponsibleRequest};
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
