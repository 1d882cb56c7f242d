//! Evaluation reports (Arts. 35–37): per department over a period, what it
//! provided and used and how timely it answered; per dataset, whether its
//! provider keeps it current. Built from the usage counters kept on the
//! write path and from the (few) grant and dispute records — never from a
//! scan of the audit log.

use super::audit::require_oversight;
use super::subjects::parse_time;
use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use basedata_query::gov::cst_date;
use basedata_store::catalog::UpdateFrequency;
use basedata_store::usage::{day_of, totals, Kind, Owner};
use basedata_store::value::{format_date, format_datetime};
use basedata_store::Action;
use serde::Deserialize;
use super::schema::{ErrorBody, FreshnessReport, FreshnessRow, SharingReport, SharingRow};


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
    require_oversight(&caller)?;
    let now = state.grant_book.now();
    let from = p.from.as_deref().map(|t| parse_time("from", t)).transpose()?.unwrap_or(0);
    let to = p.to.as_deref().map(|t| parse_time("to", t)).transpose()?.unwrap_or(now);
    if to < from {
        return Err(ApiError::invalid_value("to is before from"));
    }
    // Counters are per CST day: the period covers the days of `from` to `to`.
    let (from_day, to_day) = (day_of(from), day_of(to) + 1);
    let grants = state.grant_book.all();
    let store = state.store.clone();
    let disputes = tokio::task::spawn_blocking(move || basedata_query::gov::all_disputes(&**store.engine()))
        .await
        .map_err(ApiError::internal)??;
    let in_period = |t: i64| t >= from && t <= to;
    let mut rows = Vec::new();
    for dept in state.departments.iter() {
        let id = dept.id.as_str();
        let used = totals(&**state.store.engine(), Owner::Department(id), from_day, to_day)?;
        let count = |a: Action| used.get(&Kind::Action(a)).copied().unwrap_or(0);
        let mut records_held = 0u64;
        let mut updates_applied = 0u64;
        let mut datasets = Vec::new();
        for ds in state.catalog.datasets().iter().filter(|d| d.provider == id) {
            records_held += state.store.dataset_stats(&ds.id).records;
            updates_applied += totals(&**state.store.engine(), Owner::Dataset(&ds.id), from_day, to_day)?
                .get(&Kind::Applied)
                .copied()
                .unwrap_or(0);
            datasets.push(ds.id.clone());
        }
        let decided: Vec<_> = grants
            .iter()
            .filter(|g| datasets.contains(&g.dataset) && g.decided_at.is_some_and(in_period))
            .collect();
        let deemed = grants
            .iter()
            .filter(|g| {
                datasets.contains(&g.dataset)
                    && g.effective_state(now, state.grant_book.policy()) == basedata_query::gov::GrantState::DeemedApproved
                    && in_period(basedata_query::gov::end_of_day(g.due_date()))
            })
            .count();
        let resolved: Vec<_> = disputes
            .iter()
            .filter(|d| datasets.contains(&d.dataset) && d.resolved_at.is_some_and(in_period))
            .collect();
        let overdue_disputes = disputes.iter().filter(|d| datasets.contains(&d.dataset) && d.is_overdue(now)).count();
        rows.push(SharingRow {
            department: id.to_owned(),
            name: dept.name.clone(),
            datasets_provided: datasets,
            records_provided: records_held,
            updates_applied,
            update_requests: count(Action::Update),
            lookups: count(Action::Lookup),
            verifications: count(Action::Verify),
            batch_lines: count(Action::BatchVerify),
            change_feed_reads: count(Action::ChangeFeed),
            denials: count(Action::Denied),
            grants_decided: decided.len(),
            grants_decided_on_time: decided.iter().filter(|g| g.decided_on_time() == Some(true)).count(),
            grants_deemed_approved: deemed,
            disputes_resolved: resolved.len(),
            disputes_resolved_on_time: resolved.iter().filter(|d| d.resolved_on_time() == Some(true)).count(),
            disputes_overdue: overdue_disputes,
        });
    }
    Ok(Json(SharingReport { from: format_datetime(from), to: format_datetime(to), departments: rows }))
}

/// How long a provider may go without an update before it is overdue.
fn allowed_gap(freq: &UpdateFrequency) -> (u32, u32) {
    // (working days, calendar days); the larger bound applies.
    match freq {
        // Base data is updated as it changes (Art. 19); a whole working day
        // without any change to a populated base dataset is suspicious.
        UpdateFrequency::Realtime => (1, 0),
        UpdateFrequency::WorkingDays(n) => (*n, 0),
        UpdateFrequency::Quarterly => (0, 92),
    }
}

/// Per dataset: records held, last update, and whether its provider is overdue.
#[utoipa::path(get, path = "/v1/reports/freshness", tag = "reports",
    responses((status = 200, body = FreshnessReport), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn freshness(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<FreshnessReport>> {
    require_oversight(&caller)?;
    let now = state.grant_book.now();
    let today = cst_date(now);
    let mut rows = Vec::new();
    for ds in state.catalog.datasets() {
        let st = state.store.dataset_stats(&ds.id);
        let (wd, cd) = allowed_gap(&ds.update_frequency);
        let (overdue, due) = if st.last_update == 0 {
            (false, None)
        } else {
            let last = cst_date(st.last_update);
            let due = std::cmp::max(
                state.calendar.add_working_days(last, wd),
                last.saturating_add(time::Duration::days(cd as i64)),
            );
            (today > due, Some(due))
        };
        rows.push(FreshnessRow {
            dataset: ds.id.clone(),
            provider: ds.provider.clone(),
            update_frequency: ds.update_frequency.to_string(),
            records: st.records,
            updates: st.updates,
            last_update: (st.last_update != 0).then(|| format_datetime(st.last_update)),
            next_update_due: due.map(format_date),
            overdue,
        });
    }
    Ok(Json(FreshnessReport {
        as_of: format_datetime(now),
        calendar_covers_this_year: state.calendar.covers(today.year()),
        datasets: rows,
    }))
}
