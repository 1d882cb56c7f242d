//! Steward pages (数据管护): a provider's staff answer grant requests for
//! the department's datasets (approve, or refuse with reasons), resolve
//! disputes about its records, and watch its datasets' timeliness.

use super::html::{csrf_field, esc, notice, table, Page};
use crate::accounts::session::Session;
use crate::accounts::staff::StaffRole;
use super::{dataset_name, field_titles, need, query_error, CsrfForm};
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use basedata_query::rejected::KEPT;
use basedata_store::value::format_date;
use std::fmt::Write;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/steward", get(steward_page))
        .route("/console/steward/grants/{id}", post(decide))
        .route("/console/steward/disputes/{id}", post(resolve))
}

/// Whether the steward's department provides `dataset`.
fn provides(state: &AppState, session: &Session, dataset: &str) -> bool {
    state.catalog.dataset(dataset).is_some_and(|d| d.provider == session.staff.department.id)
}

async fn render(state: &AppState, session: &Session, message: String) -> Response {
    let caller = session.staff.caller();
    let now = state.queries.grants.now();
    let today = basedata_query::gov::cst_date(now);
    let mut body = message;
    // Grant requests on this department's datasets.
    let grants = match state.queries.grants_list(&caller, Some("pending")) {
        Ok(g) => g,
        Err(e) => return Page::new("数据管护", query_error(&e)).signed(session, "steward").into_response(),
    };
    let rows: Vec<Vec<String>> = grants
        .iter()
        .filter(|g| provides(state, session, &g.dataset))
        .map(|g| {
            let due = g.due_date();
            let cls = if due < today { "overdue" } else { "" };
            vec![
                super::department_label(state, &g.department),
                esc(&dataset_name(state, &g.dataset)),
                match g.kind {
                    // A subscription opens the dataset's changes, no fields.
                    basedata_query::gov::GrantKind::Subscription => "变更订阅".to_owned(),
                    basedata_query::gov::GrantKind::Fields => esc(&field_titles(state, &g.dataset, &g.fields)),
                },
                format!("{}<br><span class=\"muted\">{}</span>", esc(&g.purpose), esc(&g.legal_basis)),
                format!(r#"<span class="{cls}">{}</span>"#, format_date(due)),
                // Two forms, so that Enter in the reason field refuses
                // rather than submitting the first (approving) button.
                format!(
                    r#"<form method="post" action="/console/steward/grants/{id}" class="decide" data-grant="{id}">{csrf}<input type="hidden" name="decision" value="approve"><button type="submit" id="approve-{id}">同意</button></form><form method="post" action="/console/steward/grants/{id}" class="decide" data-refuse="{id}">{csrf}<input type="hidden" name="decision" value="refuse"><label for="reason-{id}" class="sr">不同意的理由</label><input id="reason-{id}" name="reason" placeholder="不同意的理由（必填）" required maxlength="500"><button type="submit" class="refuse" id="refuse-{id}">不同意</button></form>"#,
                    csrf = csrf_field(&session.csrf),
                    id = esc(&g.id)
                ),
            ]
        })
        .collect();
    let _ = write!(
        body,
        r#"<section class="card"><h2>待答复的共享申请</h2><p class="muted">应在 5 个工作日内答复；逾期未答复视为同意。</p>{}</section>"#,
        table("grants", &["申请部门", "数据集", "信息项", "用途与依据", "答复期限", "答复"], &rows)
    );
    // Open disputes about this department's records.
    let disputes = match state.queries.disputes(&caller, Some("open")).await {
        Ok(d) => d,
        Err(e) => return Page::new("数据管护", query_error(&e)).signed(session, "steward").into_response(),
    };
    let mut rows = Vec::new();
    for d in disputes.iter().filter(|d| provides(state, session, &d.dataset)) {
        let key = state.queries.dispute_key(d).ok().flatten().map(|k| k.masked().to_string()).unwrap_or_default();
        let cls = if d.is_overdue(now) { "overdue" } else { "" };
        rows.push(vec![
            super::department_label(state, &d.department),
            format!(r#"<span class="keynum">{}</span>"#, esc(&key)),
            esc(&format!("{} · {}", dataset_name(state, &d.dataset), field_titles(state, &d.dataset, std::slice::from_ref(&d.field)))),
            format!("{}<br><span class=\"muted\">{}</span>", esc(&d.claimed), esc(&d.note)),
            format!(r#"<span class="{cls}">{}</span>"#, format_date(d.due_date())),
            format!(
                r#"<form method="post" action="/console/steward/disputes/{id}" class="decide" data-dispute="{id}">{}<label for="outcome-{id}" class="sr">结论</label><select id="outcome-{id}" name="outcome"><option value="confirmed">核实无误</option><option value="corrected">已更正</option></select><label for="note-{id}" class="sr">说明</label><input id="note-{id}" name="note" placeholder="说明" maxlength="500"><button type="submit" id="resolve-{id}">提交</button></form>"#,
                csrf_field(&session.csrf),
                id = esc(&d.id)
            ),
        ]);
    }
    let _ = write!(
        body,
        r#"<section class="card"><h2>待核查的异议</h2><p class="muted">“已更正”须先通过更新接口写入更正后的记录。</p>{}</section>"#,
        table("disputes", &["提出部门", "号码", "信息项", "主张的值与说明", "核查期限", "结论"], &rows)
    );
    // Timeliness of the department's datasets.
    match state.queries.own_freshness(&caller) {
        Ok((_, _, fresh)) => {
            let rows: Vec<Vec<String>> = fresh
                .iter()
                .map(|f| {
                    vec![
                        esc(&dataset_name(state, &f.dataset)),
                        esc(&f.update_frequency),
                        f.records.to_string(),
                        f.last_update.map(super::auditor::cst).map(|s| esc(&s)).unwrap_or_else(|| "从未".into()),
                        f.next_update_due.map(format_date).unwrap_or_default(),
                        if f.overdue { r#"<span class="overdue">逾期未更新</span>"#.into() } else { "正常".into() },
                    ]
                })
                .collect();
            let _ = write!(
                body,
                r#"<section class="card"><h2>数据集时效</h2>{}</section>"#,
                table("freshness", &["数据集", "更新频率", "记录数", "最近更新", "下次更新期限", "状态"], &rows)
            );
        }
        Err(e) => body.push_str(&query_error(&e)),
    }
    // The last rejected update lines of the datasets the department
    // provides (of a dataset of several providers, the steward sees every
    // part's lines, another provider its own).
    let mut rows = Vec::new();
    for ds in state.catalog.datasets().iter().filter(|d| d.is_provided_by(&session.staff.department.id)) {
        let lines = match state.queries.rejected_lines(&caller, &ds.id) {
            Ok(l) => l,
            Err(e) => {
                body.push_str(&query_error(&e));
                continue;
            }
        };
        let several = ds.division.is_some();
        for r in lines {
            let title = if several { format!("{}（{}）", ds.title, super::department_name(state, &r.provider)) } else { ds.title.clone() };
            rows.push((r.at, vec![
                esc(&super::auditor::cst(r.at)),
                esc(&title),
                r.line.to_string(),
                format!(r#"<span class="keynum">{}</span>"#, esc(r.key.as_deref().unwrap_or(""))),
                format!(r#"<code data-rejected="{0}">{0}</code>"#, esc(&r.code)),
                esc(&r.message),
            ]));
        }
    }
    // Newest first across datasets (a stable sort: each dataset's lines
    // stay in the order they were kept).
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    let rows: Vec<Vec<String>> = rows.into_iter().take(KEPT).map(|(_, r)| r).collect();
    let _ = write!(
        body,
        r#"<section class="card"><h2>最近被拒绝的更新</h2><p class="muted">每个数据集保留最近 {KEPT} 行（重启后仍在），此处列出最新的 {KEPT} 行；号码只保存遮蔽后的形式。</p>{}</section>"#,
        table("rejected", &["时间", "数据集", "行号", "号码", "代码", "原因"], &rows)
    );
    Page::new("数据管护", body).signed(session, "steward").into_response()
}

async fn steward_page(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Steward) {
        return r;
    }
    render(&state, &session, String::new()).await
}

async fn decide(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Steward) {
        return r;
    }
    let approve = match form.get("decision") {
        Some("approve") => true,
        Some("refuse") => false,
        _ => return render(&state, &session, notice("error", "invalid_value", "请选择同意或不同意")).await,
    };
    let msg = match state.queries.decide_grant(&session.staff.caller(), &id, approve, form.get("reason")).await {
        Ok(g) => notice(
            "ok",
            g.state.as_str(),
            &format!("已{}「{}」的申请。", if approve { "同意" } else { "拒绝" }, dataset_name(&state, &g.dataset)),
        ),
        Err(e) => query_error(&e),
    };
    render(&state, &session, msg).await
}

async fn resolve(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Steward) {
        return r;
    }
    let outcome = form.get("outcome").unwrap_or("");
    let msg = match state.queries.resolve_dispute(&session.staff.caller(), &id, outcome, form.get("note")).await {
        Ok(d) => notice("ok", "resolved", &format!("异议已办结（{}）。", d.resolution.map_or("", |r| if r.as_str() == "corrected" { "已更正" } else { "核实无误" }))),
        Err(e) => query_error(&e),
    };
    render(&state, &session, msg).await
}
