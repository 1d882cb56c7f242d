//! Evaluation reports (Arts. 35–37) over HTTP: the figures come from
//! `Queries::sharing_report` and `Queries::freshness_report`; here they are
//! rendered.

use super::schema::{ErrorBody, FreshnessReport, FreshnessRow, ProviderFreshnessRow, SharingReport, SharingRow};
use super::subjects::parse_time;
use super::{ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use basedata_store::value::{format_date, format_datetime};
use basedata_store::Action;
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Period {
    /// RFC 3339 (default: the beginning).
    from: Option<String>,
    /// RFC 3339 (default: now).
    to: Option<String>,
}

/// Per department over a period: provided, used, denied, and timeliness of answers.
#[utoipa::path(get, path = "/v1/reports/sharing", tag = "reports", params(Period),
    responses((status = 200, body = SharingReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn sharing(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<Period>,
) -> ApiResult<Json<SharingReport>> {
    state.queries.require_oversight(&caller)?;
    let from = p.from.as_deref().map(|t| parse_time("from", t)).transpose()?;
    let to = p.to.as_deref().map(|t| parse_time("to", t)).transpose()?;
    let (from, to, rows) = state.queries.sharing_report(&caller, from, to).await?;
    let departments = rows
        .into_iter()
        .map(|f| SharingRow {
            update_requests: f.used(Action::Update),
            lookups: f.used(Action::Lookup),
            verifications: f.used(Action::Verify),
            batch_lines: f.used(Action::BatchVerify),
            change_feed_reads: f.used(Action::ChangeFeed),
            denials: f.used(Action::Denied),
            department: f.department,
            name: f.name,
            datasets_provided: f.datasets_provided,
            records_provided: f.records_provided,
            updates_applied: f.updates_applied,
            grants_decided: f.grants_decided,
            grants_decided_on_time: f.grants_decided_on_time,
            grants_deemed_approved: f.grants_deemed_approved,
            disputes_resolved: f.disputes_resolved,
            disputes_resolved_on_time: f.disputes_resolved_on_time,
            disputes_overdue: f.disputes_overdue,
            claim_limit_refusals: f.claim_limit_refusals,
            flagged: f.uses_without_catalogued_purpose > 0
                || f.responsible != Some(basedata_query::departments::RecordStatus::Current),
            purpose_mode: f.purpose_mode.into(),
            uses_without_catalogued_purpose: f.uses_without_catalogued_purpose,
            responsible_record: f.responsible.map_or("missing", |r| r.as_str()).into(),
            responsible_as_of: f.responsible_as_of.map(format_date),
        })
        .collect();
    Ok(Json(SharingReport { from: format_datetime(from), to: format_datetime(to), departments }))
}

/// Per dataset: records held, last update, and whether its provider is overdue.
#[utoipa::path(get, path = "/v1/reports/freshness", tag = "reports",
    responses((status = 200, body = FreshnessReport), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn freshness(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<FreshnessReport>> {
    let (as_of, covers, rows) = state.queries.freshness_report(&caller)?;
    let datasets = rows
        .into_iter()
        .map(|d| FreshnessRow {
            dataset: d.dataset,
            provider: d.provider,
            update_frequency: d.update_frequency,
            records: d.records,
            updates: d.updates,
            last_update: d.last_update.map(format_datetime),
            next_update_due: d.next_update_due.map(format_date),
            overdue: d.overdue,
            providers: d
                .providers
                .into_iter()
                .map(|p| ProviderFreshnessRow {
                    provider: p.provider,
                    updates: p.updates,
                    last_update: p.last_update.map(format_datetime),
                    next_update_due: p.next_update_due.map(format_date),
                    overdue: p.overdue,
                })
                .collect(),
        })
        .collect();
    Ok(Json(FreshnessReport { as_of: format_datetime(as_of), calendar_covers_this_year: covers, datasets }))
}
