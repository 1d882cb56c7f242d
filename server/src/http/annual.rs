//! The yearly report over HTTP: `GET /v1/reports/annual?year=` answers the
//! figures as JSON, or with `format=html` the printable document
//! (`crate::annual_doc`), which `basedata report annual` also prints to PDF.

use super::schema::{AnnualConsumer, AnnualDataset, AnnualDepartment, AnnualHandling, AnnualProvider, AnnualReport, AnnualUses, ErrorBody};
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use basedata_query::annual as q;
use basedata_query::gov::cst_date;
use basedata_store::value::{format_date, format_datetime};
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnnualParams {
    /// The calendar year (China Standard Time); the current year is
    /// reported up to now.
    year: Option<String>,
    /// `json` (default) or `html`: the printable document with charts.
    format: Option<String>,
}

impl From<&q::Handling> for AnnualHandling {
    fn from(h: &q::Handling) -> Self {
        AnnualHandling {
            received: h.received,
            answered: h.answered,
            on_time: h.on_time,
            late: h.late,
            deemed_approved: h.deemed_approved,
            open_overdue: h.open_overdue,
        }
    }
}

impl From<&q::Uses> for AnnualUses {
    fn from(u: &q::Uses) -> Self {
        AnnualUses {
            lookups: u.lookups,
            verifications: u.verifications,
            batch_lines: u.batch_lines,
            change_feed_reads: u.change_feed_reads,
            denials: u.denials,
        }
    }
}

/// The report's JSON form.
pub fn to_schema(r: q::AnnualReport, generated_at: i64) -> AnnualReport {
    AnnualReport {
        year: r.year,
        from: format_datetime(r.from),
        to: format_datetime(r.to),
        first_day: format_date(cst_date(r.from)),
        last_day: format_date(cst_date(r.to)),
        complete: r.complete,
        days: r.days,
        calendar_covers_year: r.calendar_covers_year,
        generated_at: format_datetime(generated_at),
        grants: (&r.grants).into(),
        disputes: (&r.disputes).into(),
        departments: r
            .departments
            .into_iter()
            .map(|d| AnnualDepartment {
                uses: (&d.uses).into(),
                grants: (&d.grants).into(),
                disputes: (&d.disputes).into(),
                department: d.department,
                name: d.name,
                roles: d.roles,
                purpose_mode: d.purpose_mode.into(),
                responsible_record: d.responsible_record.into(),
                responsible_as_of: d.responsible_as_of.map(format_date),
                responsible_persons: d.responsible_persons,
                datasets_provided: d.datasets_provided,
                update_requests: d.update_requests,
                updates_applied: d.updates_applied,
                rejected_lines: d.rejected_lines,
                uses_without_catalogued_purpose: d.uses_without_catalogued_purpose,
                refused_for_purpose: d.refused_for_purpose,
                refused_for_class: d.refused_for_class,
                refused_for_claim_limit: d.refused_for_claim_limit,
            })
            .collect(),
        datasets: r
            .datasets
            .into_iter()
            .map(|d| AnnualDataset {
                grants: (&d.grants).into(),
                disputes: (&d.disputes).into(),
                consumers: d
                    .consumers
                    .iter()
                    .map(|c| AnnualConsumer { department: c.department.clone(), uses: (&c.uses).into() })
                    .collect(),
                providers: d
                    .providers
                    .iter()
                    .map(|p| AnnualProvider {
                        provider: p.provider.clone(),
                        updates_applied: p.timeliness.updates_applied,
                        update_days: p.timeliness.update_days,
                        days_overdue: p.timeliness.days_overdue,
                        longest_gap_days: p.timeliness.longest_gap_days,
                        days_before_first_update: p.timeliness.days_before_first_update,
                    })
                    .collect(),
                dataset: d.dataset,
                title: d.title,
                provider: d.provider,
                update_frequency: d.update_frequency,
                updates_applied: d.timeliness.updates_applied,
                rejected_lines: d.rejected_lines,
                monthly_updates: d.timeliness.monthly_updates.to_vec(),
                update_days: d.timeliness.update_days,
                days_overdue: d.timeliness.days_overdue,
                longest_gap_days: d.timeliness.longest_gap_days,
                days_before_first_update: d.timeliness.days_before_first_update,
            })
            .collect(),
    }
}

/// The yearly sharing report: per department what it provided and used, per dataset who used it and how timely it was, grants and disputes answered on time, refusals.
#[utoipa::path(get, path = "/v1/reports/annual", tag = "reports", params(AnnualParams),
    responses((status = 200, description = "The figures as JSON, or with format=html the printable document",
               content((AnnualReport = "application/json"), (String = "text/html"))),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn annual(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<AnnualParams>,
) -> ApiResult<Response> {
    state.queries.require_oversight(&caller)?;
    let html = match p.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(_) => return Err(ApiError::invalid_value("format must be json or html")),
    };
    let now = state.queries.grants.now();
    let year = match p.year.as_deref() {
        None => cst_date(now).year(),
        Some(y) => y.trim().parse().map_err(|_| ApiError::invalid_value("year must be a year, e.g. 2026"))?,
    };
    let report = to_schema(state.queries.annual_report(&caller, year).await?, now);
    if html {
        Ok(crate::http::annual_doc::response(crate::http::annual_doc::render(&report, None)))
    } else {
        Ok(Json(report).into_response())
    }
}
