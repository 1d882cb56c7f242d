//! Auditor pages (审计): the audit trail by subject, department and time
//! range with the hash chain's state, the grant and dispute queues with
//! their working-day deadlines, and the sharing and freshness reports as
//! bar charts (SVG drawn here) and CSV downloads.

use super::html::{bars, csrf_field, esc, notice, table, Page};
use crate::accounts::session::Session;
use crate::accounts::staff::StaffRole;
use super::{dataset_name, department_name, field_titles, key_reason, labelled, need, query_error, CsrfForm, Form};
use crate::http::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use basedata_store::audit::{AuditEntry, AuditQuery};
use basedata_store::keys::{EntityKey, PersonKey};
use basedata_store::value::format_date;
use basedata_store::{Action, SubjectKey};
use std::fmt::Write;
use time::{Date, OffsetDateTime, UtcOffset};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/audit", get(audit_page).post(audit_search))
        .route("/console/queues", get(queues))
        .route("/console/reports", get(reports))
        .route("/console/reports/sharing.csv", get(sharing_csv))
        .route("/console/reports/freshness.csv", get(freshness_csv))
        .route("/console/reports/daily.csv", get(daily_csv))
        .route("/console/reports/annual", get(annual))
}

const CST: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

/// Unix microseconds as China Standard Time, to the second.
pub fn cst(micros: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH).to_offset(CST);
    format!("{} {:02}:{:02}:{:02}", t.date(), t.hour(), t.minute(), t.second())
}

/// A `YYYY-MM-DD` date (CST) from a form.
fn date_of(s: &str) -> Option<Date> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next()?.parse().ok()?, it.next()?.parse::<u8>().ok()?, it.next()?.parse().ok()?);
    Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()
}

/// The first microsecond of a CST day.
fn day_start(d: Date) -> i64 {
    (d.midnight().assume_offset(CST).unix_timestamp_nanos() / 1000) as i64
}

fn action_title(a: Action) -> &'static str {
    super::counter::action_title(a.as_str())
}

fn entries_table(state: &AppState, entries: &[AuditEntry]) -> String {
    // In a cluster the trail holds every node's uses: each is numbered in
    // the chain of the node that answered it.
    let local = state.node_name();
    let approvals = state.queries.approvals(entries);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .zip(approvals)
        .map(|(e, approvals)| {
            let operator = match &e.operator {
                Some(o) => person(state, o, e.operator_verified),
                None => "—".into(),
            };
            let key = e.key.map(|k| format!(r#"<span class="keynum">{}</span>"#, esc(&k.masked().to_string()))).unwrap_or_default();
            let ids = if e.fields.is_empty() { e.datasets.join("、") } else { e.fields.join("、") };
            let what = super::counter::what_was_used(state, &e.datasets, &e.fields);
            let approvals: Vec<String> = approvals
                .into_iter()
                .map(|a| {
                    let who = match (&a.by, &a.approver) {
                        _ if a.deemed => "逾期未答复，视为同意".to_owned(),
                        (Some(d), Some(o)) => format!("{} {}", super::department_label(state, d), person(state, o, a.approver_verified)),
                        (Some(d), None) => super::department_label(state, d),
                        (None, _) => "—".to_owned(),
                    };
                    let since = a.since.map(|t| format!("，{} 起生效", cst(t))).unwrap_or_default();
                    format!(r#"<span class="approval" title="授权 {}{}">{who}</span>"#, esc(&a.grant), esc(&since))
                })
                .collect();
            let approvals = if approvals.is_empty() { "—".to_owned() } else { approvals.join("<br>") };
            let number = match (&e.node, &local) {
                (Some(node), _) | (None, Some(node)) => format!("{}·{}", esc(node), e.seq),
                (None, None) => e.seq.to_string(),
            };
            vec![
                number,
                esc(&cst(e.at)),
                super::department_label(state, &e.department),
                operator,
                esc(&e.purpose),
                action_title(e.action).to_owned(),
                key,
                labelled(&ids, &what),
                approvals,
                super::outcome_label(&e.outcome),
            ]
        })
        .collect();
    table("audit", &["序号", "时间", "部门", "经办人", "用途", "操作", "号码", "内容", "批准", "结果"], &rows)
}

/// An operator (or approver) with a badge for how it is known: a
/// signed-in one by the name on its account, a declared one as declared.
fn person(state: &AppState, id: &str, verified: bool) -> String {
    if verified {
        format!(r#"{} <span class="badge ok" title="平台已核实身份">已核实</span>"#, esc(&staff_name(state, id)))
    } else {
        format!(r#"{} <span class="badge warn" title="调用程序自行声明，未经核实">自报</span>"#, esc(id))
    }
}

/// A signed-in operator's id with the name on the account.
fn staff_name(state: &AppState, id: &str) -> String {
    match state.accounts.staff.get(id) {
        Some(s) if !s.name.is_empty() => format!("{}（{id}）", s.name),
        _ => id.to_owned(),
    }
}

async fn render_audit(state: &AppState, session: &Session, form: &Form, entries: Result<Vec<AuditEntry>, String>) -> Response {
    let caller = session.staff.caller();
    let chain = match state.queries.audit_check(&caller).await {
        Ok(c) if c.ok => {
            // After a removal for the retention period the chain is checked from its anchor.
            let from = if c.starts_after > 0 { format!("（第 {} 条起；此前已按保存期限清理）", c.starts_after + 1) } else { String::new() };
            format!(r#"<p class="ok" id="chain" data-chain="ok">哈希链校验通过：共 {} 条{from}，链头 {}…</p>"#, c.entries, &hex::encode(c.head)[..16])
        }
        Ok(c) => format!(
            r#"<p class="error" id="chain" data-chain="broken">哈希链校验失败：{}</p>"#,
            esc(c.problem.as_deref().unwrap_or("未知问题"))
        ),
        Err(e) => query_error(&e),
    };
    let mut depts = String::from(r#"<option value="">全部</option>"#);
    for d in state.departments.iter() {
        let sel = if form.get("department") == Some(d.id.as_str()) { " selected" } else { "" };
        let _ = write!(depts, r#"<option value="{}"{sel}>{}</option>"#, esc(&d.id), esc(if d.name.is_empty() { &d.id } else { &d.name }));
    }
    let val = |n: &str| esc(form.get(n).unwrap_or(""));
    let mut body = format!(
        r#"{chain}<section class="card"><form method="post" action="/console/audit" id="audit-search">{}<div class="grid"><div>{}</div><div><label for="audit-key">号码</label><input id="audit-key" name="key" class="keynum" data-keycheck="any" autocomplete="off" maxlength="40"></div><div><label for="audit-department">部门</label><select id="audit-department" name="department">{depts}</select></div><div><label for="audit-from">起始日期</label><input id="audit-from" name="from" type="date" value="{}"></div><div><label for="audit-to">截止日期（含）</label><input id="audit-to" name="to" type="date" value="{}"></div></div><button id="audit-btn" type="submit">查询</button></form></section>"#,
        csrf_field(&session.csrf),
        super::counter::id_type_select("audit"),
        val("from"),
        val("to"),
    );
    match entries {
        Ok(e) => {
            let _ = write!(body, r#"<p id="audit-count">{} 条记录（最多显示 1000 条）</p>{}"#, e.len(), entries_table(state, &e));
        }
        Err(m) => body.push_str(&m),
    }
    Page::new("审计日志", body).signed(session, "audit").into_response()
}

async fn audit_page(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Auditor) {
        return r;
    }
    // The latest entries: a time-index read from a day back.
    let now = state.queries.grants.now();
    let node = state.node_name();
    let q = AuditQuery { from: Some(now - 86_400_000_000), limit: 1000, node, ..AuditQuery::default() };
    let entries = state.queries.audit(&session.staff.caller(), q).await.map_err(|e| query_error(&e));
    render_audit(&state, &session, &Form::default(), entries).await
}

async fn audit_search(State(state): State<AppState>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Auditor) {
        return r;
    }
    let node = state.node_name();
    let mut q = AuditQuery { limit: 1000, node, ..AuditQuery::default() };
    let other = form.get("id_type").map(|name| super::counter::other_document(name).ok_or(name));
    if let (Some(Err(name)), Some(_)) = (&other, form.get("key")) {
        let m = notice("error", "invalid_value", &format!("未知的证件类型：{name}"));
        return render_audit(&state, &session, &form, Err(m)).await;
    }
    if let (Some(k), Some(Ok(doc))) = (form.get("key"), other) {
        q.key = match SubjectKey::parse_doc(doc, k) {
            Ok(key) => Some(key),
            Err(e) => {
                let m = notice("error", "invalid_key", &format!("号码无效：{}", key_reason(e.reason())));
                return render_audit(&state, &session, &form, Err(m)).await;
            }
        };
    } else if let Some(k) = form.get("key") {
        q.key = match PersonKey::parse(k) {
            Ok(p) => Some(SubjectKey::Person(p)),
            Err(pe) => match EntityKey::parse(k) {
                Ok(e) => Some(SubjectKey::Entity(e)),
                Err(_) => {
                    let m = notice("error", "invalid_key", &format!("号码无效：{}", key_reason(pe.reason())));
                    return render_audit(&state, &session, &form, Err(m)).await;
                }
            },
        };
    }
    q.department = form.get("department").map(str::to_owned);
    for (name, slot, shift) in [("from", &mut q.from, 0), ("to", &mut q.to, 1)] {
        if let Some(s) = form.get(name) {
            match date_of(s) {
                Some(d) => *slot = Some(day_start(d.saturating_add(time::Duration::days(shift)))),
                None => {
                    let m = notice("error", "invalid_value", "日期应为 YYYY-MM-DD");
                    return render_audit(&state, &session, &form, Err(m)).await;
                }
            }
        }
    }
    let entries = state.queries.audit(&session.staff.caller(), q).await.map_err(|e| query_error(&e));
    render_audit(&state, &session, &form, entries).await
}

async fn queues(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Auditor) {
        return r;
    }
    let caller = session.staff.caller();
    let now = state.queries.grants.now();
    let today = basedata_query::gov::cst_date(now);
    let policy = &state.queries.grants.policy();
    let mut body = String::new();
    match state.queries.grants_list(&caller, None) {
        Ok(mut grants) => {
            grants.sort_by_key(|g| (g.effective_state(now, policy) != basedata_query::gov::GrantState::Pending, g.due));
            let rows: Vec<Vec<String>> = grants
                .iter()
                .map(|g| {
                    let st = g.effective_state(now, policy);
                    let late = st == basedata_query::gov::GrantState::Pending && g.due_date() < today;
                    let late_decision = g.decided_on_time() == Some(false);
                    let cls = if late || late_decision { "overdue" } else { "" };
                    vec![
                        super::department_label(&state, &g.department),
                        super::dataset_label(&state, &g.dataset),
                        labelled(&g.fields.join("、"), &field_titles(&state, &g.dataset, &g.fields)),
                        super::outcome_label(st.as_str()),
                        format!(r#"<span class="{cls}">{}</span>"#, format_date(g.due_date())),
                        g.decided_at.map(cst).map(|s| esc(&s)).unwrap_or_default(),
                    ]
                })
                .collect();
            let _ = write!(body, r#"<section class="card"><h2>共享申请</h2>{}</section>"#, table("grant-queue", &["申请部门", "数据集", "信息项", "状态", "答复期限", "答复时间"], &rows));
        }
        Err(e) => body.push_str(&query_error(&e)),
    }
    match state.queries.disputes(&caller, None).await {
        Ok(mut disputes) => {
            disputes.sort_by_key(|d| (!d.is_open(), d.due));
            let rows: Vec<Vec<String>> = disputes
                .iter()
                .map(|d| {
                    let cls = if d.is_overdue(now) || d.resolved_on_time() == Some(false) { "overdue" } else { "" };
                    vec![
                        super::department_label(&state, &d.department),
                        labelled(
                            &format!("{}.{}", d.dataset, d.field),
                            &format!("{} · {}", dataset_name(&state, &d.dataset), field_titles(&state, &d.dataset, std::slice::from_ref(&d.field))),
                        ),
                        if d.is_open() { "待核查".into() } else { format!("已办结（{}）", d.resolution.map_or(String::new(), |r| super::outcome_label(r.as_str()))) },
                        format!(r#"<span class="{cls}">{}</span>"#, format_date(d.due_date())),
                        d.resolved_at.map(cst).map(|s| esc(&s)).unwrap_or_default(),
                    ]
                })
                .collect();
            let _ = write!(body, r#"<section class="card"><h2>异议核查</h2>{}</section>"#, table("dispute-queue", &["提出部门", "信息项", "状态", "核查期限", "办结时间"], &rows));
        }
        Err(e) => body.push_str(&query_error(&e)),
    }
    Page::new("申请与异议", body).signed(&session, "queues").into_response()
}

/// Series labelled by name instead of id.
fn named(rows: &[(String, Vec<u64>)], name: impl Fn(&str) -> String) -> Vec<(String, Vec<u64>)> {
    rows.iter().map(|(id, v)| (name(id), v.clone())).collect()
}

/// Days the charts over time cover.
const SERIES_DAYS: u32 = 30;

/// One row of small bars per series (a day a bar), on one scale per chart,
/// labelled with the row's total; the dates run along the bottom.
fn series_chart(id: &str, first: Date, rows: &[(String, Vec<u64>)]) -> String {
    let rows: Vec<&(String, Vec<u64>)> = rows.iter().filter(|(_, v)| v.iter().any(|n| *n > 0)).collect();
    if rows.is_empty() {
        return format!(r#"<p id="{id}" class="muted">这段时间没有记录。</p>"#);
    }
    let days = rows[0].1.len().max(1);
    let max = rows.iter().flat_map(|(_, v)| v.iter().copied()).max().unwrap_or(1).max(1);
    let (left, width, row_h) = (170usize, 400usize, 30usize);
    let bar_w = width / days;
    let h = rows.len() * row_h + 24;
    let mut s = format!(r#"<svg id="{id}" class="chart" viewBox="0 0 660 {h}" role="img" aria-label="按日统计" xmlns="http://www.w3.org/2000/svg">"#);
    for (i, (label, values)) in rows.iter().enumerate() {
        let base = i * row_h + row_h - 4;
        let _ = write!(s, r#"<text x="0" y="{}" font-size="13">{}</text>"#, base - 6, esc(label));
        for (d, n) in values.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let bh = ((*n as f64 / max as f64) * (row_h as f64 - 8.0)).ceil().max(1.0) as usize;
            let _ = write!(
                s,
                r#"<rect x="{}" y="{}" width="{}" height="{bh}" class="bar"><title>{}：{n}</title></rect>"#,
                left + d * bar_w,
                base - bh,
                bar_w.saturating_sub(2).max(1),
                first.saturating_add(time::Duration::days(d as i64))
            );
        }
        let _ = write!(s, r#"<text x="{}" y="{}" font-size="13">{}</text>"#, left + width + 8, base - 6, values.iter().sum::<u64>());
    }
    let last = first.saturating_add(time::Duration::days(days as i64 - 1));
    let _ = write!(
        s,
        r#"<text x="{left}" y="{}" font-size="12">{first}</text><text x="{}" y="{}" font-size="12" text-anchor="end">{last}</text></svg>"#,
        h - 4,
        left + width,
        h - 4
    );
    s
}

/// What an auditor should look into per department: uses that named no
/// catalogued purpose, verifications refused for guessing at a field it may
/// not read, and a missing or out-of-date record of responsible persons
/// (each marked when it calls for attention).
fn oversight_rows(state: &AppState, rows: &[basedata_query::oversight::DepartmentFigures]) -> Vec<Vec<String>> {
    use basedata_query::departments::RecordStatus;
    let flag = |text: String, on: bool| if on { format!(r#"<span class="overdue">{text}</span>"#) } else { text };
    rows.iter()
        .map(|f| {
            let mode = if f.purpose_mode == "strict" { "按目录（严格）" } else { "自由填写（过渡）" };
            let responsible = match f.responsible {
                Some(RecordStatus::Current) => "现行".to_owned(),
                Some(RecordStatus::OutOfDate) => "已过期".to_owned(),
                Some(RecordStatus::Missing) | None => "未登记".to_owned(),
            };
            let responsible = match f.responsible_as_of {
                Some(d) => format!("{responsible}（{}）", basedata_store::value::format_date(d)),
                None => responsible,
            };
            vec![
                super::department_label(state, &f.department),
                mode.to_owned(),
                flag(f.uses_without_catalogued_purpose.to_string(), f.uses_without_catalogued_purpose > 0),
                flag(f.claim_limit_refusals.to_string(), f.claim_limit_refusals > 0),
                flag(responsible, f.responsible != Some(RecordStatus::Current)),
            ]
        })
        .collect()
}

async fn reports(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Auditor) {
        return r;
    }
    let caller = session.staff.caller();
    let mut body = String::new();
    match state.queries.sharing_report(&caller, None, None).await {
        Ok((_, _, rows)) => {
            let uses: Vec<(String, u64)> = rows
                .iter()
                .map(|f| (if f.name.is_empty() { f.department.clone() } else { f.name.clone() }, f.used(Action::Lookup) + f.used(Action::Verify) + f.used(Action::BatchVerify)))
                .collect();
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|f| {
                    vec![
                        super::department_label(&state, &f.department),
                        f.records_provided.to_string(),
                        f.used(Action::Lookup).to_string(),
                        f.used(Action::Verify).to_string(),
                        f.used(Action::BatchVerify).to_string(),
                        f.used(Action::Denied).to_string(),
                        format!("{}/{}", f.grants_decided_on_time, f.grants_decided),
                        format!("{}/{}", f.disputes_resolved_on_time, f.disputes_resolved),
                    ]
                })
                .collect();
            let _ = write!(
                body,
                r#"<section class="card"><h2>各部门使用量（查询、核验与批量比对）</h2>{}{}<p><a id="sharing-csv" href="/console/reports/sharing.csv" download>下载 CSV</a></p></section>"#,
                bars("sharing-chart", &uses),
                table("sharing", &["部门", "提供记录", "查询", "核验", "批量比对", "被拒绝", "按期答复申请", "按期办结异议"], &table_rows)
            );
            let _ = write!(
                body,
                r#"<section class="card"><h2>监督提示（用途、核验与责任人）</h2>{}</section>"#,
                table("oversight", &["部门", "用途说明方式", "未列明目录用途的使用", "核验超限被拒", "责任人登记"], &oversight_rows(&state, &rows))
            );
        }
        Err(e) => body.push_str(&query_error(&e)),
    }
    match state.queries.usage_by_day(&caller, SERIES_DAYS).await {
        Ok(u) => {
            let _ = write!(
                body,
                r#"<section class="card"><h2>近 {SERIES_DAYS} 天每日使用量（按部门）</h2>{}</section><section class="card"><h2>近 {SERIES_DAYS} 天每日使用量（按数据集）</h2><p class="muted">各部门对该数据集的查询、核验与批量比对之和。</p>{}</section><section class="card"><h2>近 {SERIES_DAYS} 天每日更新量（按数据集）</h2>{}<p><a id="daily-csv" href="/console/reports/daily.csv" download>下载每日数据 CSV</a></p></section>"#,
                series_chart("usage-by-day", u.first_day, &named(&u.by_department, |id| department_name(&state, id))),
                series_chart("uses-by-dataset", u.first_day, &named(&u.uses_by_dataset, |id| dataset_name(&state, id))),
                series_chart("updates-by-day", u.first_day, &named(&u.by_dataset, |id| dataset_name(&state, id)))
            );
        }
        Err(e) => body.push_str(&query_error(&e)),
    }
    match state.queries.freshness_report(&caller) {
        Ok((_, _, rows)) => {
            let chart: Vec<(String, u64)> = rows.iter().map(|f| (dataset_name(&state, &f.dataset), f.records)).collect();
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|f| {
                    vec![
                        super::dataset_label(&state, &f.dataset),
                        super::department_label(&state, &f.provider),
                        esc(&f.update_frequency),
                        f.records.to_string(),
                        f.last_update.map(cst).map(|s| esc(&s)).unwrap_or_else(|| "从未".into()),
                        if f.overdue { r#"<span class="overdue">逾期</span>"#.into() } else { "正常".into() },
                    ]
                })
                .collect();
            let _ = write!(
                body,
                r#"<section class="card"><h2>各数据集记录数与时效</h2>{}{}<p><a id="freshness-csv" href="/console/reports/freshness.csv" download>下载 CSV</a></p></section>"#,
                bars("freshness-chart", &chart),
                table("freshness", &["数据集", "提供部门", "更新频率", "记录数", "最近更新", "时效"], &table_rows)
            );
        }
        Err(e) => body.push_str(&query_error(&e)),
    }
    let this_year = basedata_query::gov::cst_date(state.queries.grants.now()).year();
    let _ = write!(
        body,
        r#"<section class="card"><h2>年度报告</h2><form method="get" action="/console/reports/annual"><label for="annual-year">年度</label><input id="annual-year" type="number" name="year" value="{this_year}" min="{}" max="{this_year}" required><button type="submit" id="annual-open">打开年度报告</button></form><p class="muted">按惠州办法第五十一条的评价内容编排，可在浏览器中打印为 PDF；命令 <code>basedata report annual</code> 直接生成 HTML 与 PDF。</p></section>"#,
        basedata_query::annual::FIRST_YEAR
    );
    Page::new("统计报表", body).signed(&session, "reports").into_response()
}

#[derive(serde::Deserialize)]
struct AnnualParams {
    year: Option<String>,
}

/// The yearly report document for a signed-in auditor.
async fn annual(State(state): State<AppState>, session: Session, q: axum::extract::Query<AnnualParams>) -> Response {
    if let Err(r) = need(&session, StaffRole::Auditor) {
        return r;
    }
    let now = state.queries.grants.now();
    let year = match q.year.as_deref().map(|y| y.trim().parse::<i32>()) {
        None => basedata_query::gov::cst_date(now).year(),
        Some(Ok(y)) => y,
        Some(Err(_)) => return Page::new("年度报告", notice("error", "invalid_value", "年度应为四位数字，例如 2026。")).signed(&session, "reports").into_response(),
    };
    match state.queries.annual_report(&session.staff.caller(), year).await {
        Ok(r) => crate::http::annual_doc::response(crate::http::annual_doc::render(&crate::http::annual::to_schema(r, now), Some("/console/reports"))),
        Err(e) => Page::new("年度报告", query_error(&e)).signed(&session, "reports").into_response(),
    }
}

/// One CSV field, quoted when it must be; a leading formula character is
/// defused so that a spreadsheet does not run it.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv<S: AsRef<str>>(name: &str, head: &[S], rows: Vec<Vec<String>>) -> Response {
    let mut out = String::from("\u{feff}");
    out.push_str(&head.iter().map(|h| csv_field(h.as_ref())).collect::<Vec<_>>().join(","));
    out.push_str("\r\n");
    for r in rows {
        out.push_str(&r.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    let disposition = format!("attachment; filename=\"{name}\"");
    super::html::secure(
        ([(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, disposition)], out).into_response(),
    )
}

async fn sharing_csv(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Auditor) {
        return r;
    }
    match state.queries.sharing_report(&session.staff.caller(), None, None).await {
        Ok((_, _, rows)) => csv(
            "sharing.csv",
            &["department", "records_provided", "updates_applied", "lookups", "verifications", "batch_lines", "denials", "grants_decided", "grants_decided_on_time", "disputes_resolved", "disputes_resolved_on_time", "claim_limit_refusals", "purpose_mode", "uses_without_catalogued_purpose", "responsible_record", "responsible_as_of"],
            rows.iter()
                .map(|f| {
                    vec![
                        f.department.clone(),
                        f.records_provided.to_string(),
                        f.updates_applied.to_string(),
                        f.used(Action::Lookup).to_string(),
                        f.used(Action::Verify).to_string(),
                        f.used(Action::BatchVerify).to_string(),
                        f.used(Action::Denied).to_string(),
                        f.grants_decided.to_string(),
                        f.grants_decided_on_time.to_string(),
                        f.disputes_resolved.to_string(),
                        f.disputes_resolved_on_time.to_string(),
                        f.claim_limit_refusals.to_string(),
                        f.purpose_mode.to_owned(),
                        f.uses_without_catalogued_purpose.to_string(),
                        f.responsible.map_or("missing", |r| r.as_str()).to_owned(),
                        f.responsible_as_of.map(basedata_store::value::format_date).unwrap_or_default(),
                    ]
                })
                .collect(),
        ),
        Err(e) => Page::new("统计报表", query_error(&e)).signed(&session, "reports").into_response(),
    }
}

async fn freshness_csv(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Auditor) {
        return r;
    }
    match state.queries.freshness_report(&session.staff.caller()) {
        Ok((_, _, rows)) => csv(
            "freshness.csv",
            &["dataset", "provider", "update_frequency", "records", "updates", "last_update", "next_update_due", "overdue"],
            rows.iter()
                .map(|f| {
                    vec![
                        f.dataset.clone(),
                        f.provider.clone(),
                        f.update_frequency.clone(),
                        f.records.to_string(),
                        f.updates.to_string(),
                        f.last_update.map(basedata_store::value::format_datetime).unwrap_or_default(),
                        f.next_update_due.map(format_date).unwrap_or_default(),
                        f.overdue.to_string(),
                    ]
                })
                .collect(),
        ),
        Err(e) => Page::new("统计报表", query_error(&e)).signed(&session, "reports").into_response(),
    }
}

/// The series of the charts over time, a row per series and a column
/// per day: each department's uses, each dataset's uses by all
/// departments, each dataset's applied updates.
fn daily_rows(state: &AppState, u: &basedata_query::oversight::UsageByDay) -> (Vec<String>, Vec<Vec<String>>) {
    let days = u.by_department.first().or(u.by_dataset.first()).map_or(0, |(_, v)| v.len());
    let mut head: Vec<String> = ["series", "id", "name"].map(str::to_owned).into();
    head.extend((0..days).map(|d| u.first_day.saturating_add(time::Duration::days(d as i64)).to_string()));
    let mut rows = Vec::new();
    type Series<'a> = (&'static str, &'a [(String, Vec<u64>)], fn(&AppState, &str) -> String);
    let all: [Series<'_>; 3] = [
        ("department_uses", &u.by_department, department_name),
        ("dataset_uses", &u.uses_by_dataset, dataset_name),
        ("dataset_updates", &u.by_dataset, dataset_name),
    ];
    for (series, of, name) in all {
        for (id, values) in of {
            let mut row = vec![series.to_owned(), id.clone(), name(state, id)];
            row.extend(values.iter().map(u64::to_string));
            rows.push(row);
        }
    }
    (head, rows)
}

async fn daily_csv(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Auditor) {
        return r;
    }
    match state.queries.usage_by_day(&session.staff.caller(), SERIES_DAYS).await {
        Ok(u) => {
            let (head, rows) = daily_rows(&state, &u);
            csv("daily.csv", &head, rows)
        }
        Err(e) => Page::new("统计报表", query_error(&e)).signed(&session, "reports").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }

    #[test]
    fn times_show_in_china_standard_time() {
        // 2026-01-01T00:00:00Z is 08:00 in Beijing.
        assert_eq!(cst(1_767_225_600_000_000), "2026-01-01 08:00:00");
        let d = date_of("2026-01-01").unwrap();
        assert_eq!(day_start(d), 1_767_225_600_000_000 - 8 * 3_600_000_000);
        assert!(date_of("2026-02-30").is_none());
        assert!(date_of("x").is_none());
    }
}
