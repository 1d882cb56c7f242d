//! The yearly report as a printable document: one self-contained HTML page
//! (styles inline, charts as SVG, nothing fetched) laid out along the
//! evaluation headings of Huizhou Art. 51 and the reporting duty of
//! Guangzhou Art. 37, which `basedata report annual` prints to PDF.

use super::schema::{AnnualHandling, AnnualReport, AnnualUses};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use crate::html::{bars, esc, table};
use std::collections::HashMap;
use std::fmt::Write;

const STYLE: &str = r#"
@page { size: A4; margin: 16mm 14mm; }
body { font-family: "WenQuanYi Zen Hei", "Noto Sans CJK SC", sans-serif; color: #1a202c; margin: 0 auto; max-width: 60rem; padding: 1rem; line-height: 1.5; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; border-bottom: 2px solid #2b6cb0; padding-bottom: .2rem; margin-top: 2rem; break-after: avoid; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; break-after: avoid; }
p.meta, p.note { color: #4a5568; font-size: .9rem; margin: .2rem 0; }
p.warn { color: #9b2c2c; font-weight: bold; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; margin: .4rem 0 1rem; }
th, td { border: 1px solid #cbd5e0; padding: .25rem .4rem; text-align: left; vertical-align: top; }
th { background: #edf2f7; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr { break-inside: avoid; }
.flag { color: #9b2c2c; font-weight: bold; }
.empty { color: #718096; }
svg.chart { width: 100%; max-width: 40rem; height: auto; display: block; margin: .4rem 0 1rem; }
svg.chart .bar { fill: #2b6cb0; }
svg.chart .late { fill: #c53030; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; font-size: .95rem; }
dl.summary dt { color: #4a5568; }
nav.screen { margin-bottom: 1rem; }
@media print { nav.screen { display: none; } }
"#;

/// The columns of the grants-and-disputes tables.
const HANDLING_HEAD: [&str; 12] =
    ["提供部门", "授权申请收到", "已答复", "按时", "逾期答复", "视为同意", "逾期未答复", "异议收到", "已办结", "按时", "逾期办结", "逾期未结"];

fn n(v: impl std::fmt::Display) -> String {
    format!(r#"<span class="n">{v}</span>"#)
}

/// A number that should be zero, marked when it is not.
fn bad(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!(r#"<span class="flag">{v}</span>"#)
    }
}

fn record_status(s: &str) -> String {
    match s {
        "current" => "在册且现行".into(),
        "missing" => r#"<span class="flag">未登记</span>"#.into(),
        "out_of_date" => r#"<span class="flag">超过期限未更新</span>"#.into(),
        other => esc(other),
    }
}

/// An RFC 3339 time as China Standard Time to the minute.
fn cst_minute(t: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(at) = time::OffsetDateTime::parse(t, &Rfc3339) else { return t.to_owned() };
    let at = at.to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC));
    format!("{} {:02}:{:02}", at.date(), at.hour(), at.minute())
}

/// An update frequency in words.
fn frequency(f: &str) -> String {
    match f {
        "realtime" => "实时".into(),
        "quarterly" => "每季度".into(),
        _ => match f.strip_prefix("working_days:") {
            Some(n) => format!("{n}个工作日"),
            None => esc(f),
        },
    }
}

fn role_name(r: &str) -> &str {
    match r {
        "provider" => "提供",
        "consumer" => "使用",
        "auditor" => "审计",
        "admin" => "管理",
        other => other,
    }
}

fn handling_cells(h: &AnnualHandling, grants: bool) -> Vec<String> {
    let mut row = vec![n(h.received), n(h.answered), n(h.on_time), bad(h.late as u64)];
    if grants {
        row.push(bad(h.deemed_approved as u64));
    }
    row.push(bad(h.open_overdue as u64));
    row
}

fn uses_cells(u: &AnnualUses) -> Vec<String> {
    vec![n(u.lookups), n(u.verifications), n(u.batch_lines), n(u.change_feed_reads), bad(u.denials)]
}

/// The share of answered requests answered on time, as a percentage.
fn on_time_share(h: &AnnualHandling) -> String {
    let answered = h.answered + h.deemed_approved;
    if answered == 0 {
        "—".into()
    } else {
        format!("{:.1}%", h.on_time as f64 * 100.0 / answered as f64)
    }
}

/// Twelve monthly bars of one dataset's updates, on the chart's own scale.
fn months_chart(id: &str, months: &[u64]) -> String {
    let max = months.iter().copied().max().unwrap_or(0).max(1);
    let mut s = format!(r#"<svg id="{id}" class="chart" viewBox="0 0 640 150" role="img" aria-label="按月更新量" xmlns="http://www.w3.org/2000/svg">"#);
    for (i, v) in months.iter().enumerate() {
        let x = 40 + i * 50;
        let h = (*v as f64 / max as f64 * 100.0).round() as u64;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{}" width="36" height="{h}" class="bar"><title>{}月：{v}</title></rect><text x="{}" y="142" font-size="12" text-anchor="middle">{}月</text><text x="{}" y="{}" font-size="11" text-anchor="middle">{v}</text>"#,
            120 - h,
            i + 1,
            x + 18,
            i + 1,
            x + 18,
            (120 - h).saturating_sub(3).max(10)
        );
    }
    s.push_str("</svg>");
    s
}

/// The document as an answer: its one inline style sheet is all it may
/// load (no script, no frame, nothing from elsewhere), and it is not cached.
pub fn response(doc: String) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], doc).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The whole document; `back`, when given, is a link shown on screen only
/// (the console's way back to its reports page).
pub fn render(r: &AnnualReport, back: Option<&str>) -> String {
    let names: HashMap<&str, &str> = r.departments.iter().map(|d| (d.department.as_str(), d.name.as_str())).collect();
    let name = |id: &str| esc(names.get(id).copied().filter(|s| !s.is_empty()).unwrap_or(id));
    let titles: HashMap<&str, &str> = r.datasets.iter().map(|d| (d.dataset.as_str(), d.title.as_str())).collect();
    let title = |id: &str| esc(titles.get(id).copied().filter(|s| !s.is_empty()).unwrap_or(id));
    let mut b = String::with_capacity(64 * 1024);
    let _ = write!(
        b,
        r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>{year}年度政务信息共享情况报告</title><style>{STYLE}</style></head><body>"#,
        year = r.year
    );
    if let Some(href) = back {
        let _ = write!(b, r#"<nav class="screen"><a id="back" href="{}">返回统计报表</a></nav>"#, esc(href));
    }
    let _ = write!(b, r#"<h1 id="title">{}年度政务信息共享情况报告</h1>"#, r.year);
    let _ = write!(
        b,
        r#"<p class="meta">统计期间：{} 至 {}（{} 天）· 生成时间：{}（北京时间）</p>"#,
        esc(&r.first_day),
        esc(&r.last_day),
        r.days,
        esc(&cst_minute(&r.generated_at))
    );
    if !r.complete {
        b.push_str(r#"<p class="warn" id="incomplete">本年度尚未结束，以下为截至生成时间的数据，不是年度终值。</p>"#);
    }
    if !r.calendar_covers_year {
        b.push_str(r#"<p class="warn" id="no-calendar">工作日历未覆盖本年度，期限与及时性按周一至周五计算，未扣除法定节假日。</p>"#);
    }
    b.push_str(r#"<p class="note">依据：《广州市政务信息共享管理规定》第三十五至三十七条；《惠州市政务信息资源共享管理办法》第五十、五十一条。数据取自平台在每次写入时同步累计的用量计数、授权申请与异议记录，与审计日志一致。</p>"#);

    // Summary.
    let reads: u64 = r.departments.iter().map(|d| d.uses.lookups + d.uses.verifications + d.uses.batch_lines + d.uses.change_feed_reads).sum();
    let denials: u64 = r.departments.iter().map(|d| d.uses.denials).sum();
    let applied: u64 = r.datasets.iter().map(|d| d.updates_applied).sum();
    let rejected: u64 = r.datasets.iter().map(|d| d.rejected_lines).sum();
    let overdue_days: u64 = r.datasets.iter().map(|d| u64::from(d.days_overdue)).sum();
    let _ = write!(
        b,
        r#"<h2 id="summary">概览</h2><dl class="summary"><dt>部门</dt><dd>{}</dd><dt>数据集</dt><dd>{}</dd><dt>应用的更新</dt><dd id="sum-applied">{applied}</dd><dt>被拒绝的更新行</dt><dd id="sum-rejected">{rejected}</dd><dt>使用次数（查询、核验、批量比对行、订阅读取）</dt><dd id="sum-reads">{reads}</dd><dt>被拒绝的请求</dt><dd id="sum-denials">{denials}</dd><dt>数据集逾期未更新（天·数据集）</dt><dd>{overdue_days}</dd><dt>授权申请：收到 / 按时答复率</dt><dd id="sum-grants">{} / {}</dd><dt>异议：收到 / 按时办结率</dt><dd id="sum-disputes">{} / {}</dd></dl>"#,
        r.departments.len(),
        r.datasets.len(),
        r.grants.received,
        on_time_share(&r.grants),
        r.disputes.received,
        on_time_share(&r.disputes),
    );

    // (一) Mechanism.
    b.push_str(r#"<h2 id="mechanism">一、共享工作机制建设情况</h2><p class="note">惠州办法第五十一条第（一）项：是否指定信息共享责任人并及时备查；用途是否按目录申报（广州规定第二十五条）。</p>"#);
    let rows: Vec<Vec<String>> = r
        .departments
        .iter()
        .map(|d| {
            vec![
                name(&d.department),
                esc(&d.roles.iter().map(|r| role_name(r)).collect::<Vec<_>>().join("、")),
                record_status(&d.responsible_record),
                d.responsible_as_of.as_deref().map_or_else(|| "—".into(), esc),
                n(d.responsible_persons),
                if d.purpose_mode == "strict" { "按用途目录".into() } else { r#"<span class="flag">过渡期自由填写</span>"#.into() },
            ]
        })
        .collect();
    b.push_str(&table("mechanism-table", &["部门", "角色", "责任人登记", "登记日期", "责任人数", "用途申报"], &rows));

    // (二) Provided data.
    b.push_str(r#"<h2 id="provided">二、信息提供情况</h2><p class="note">惠州办法第五十一条第（二）项：所提供信息是否符合规范（被拒绝的更新行）、是否及时（按目录更新频率逐日衡量）、异议的核查更正是否及时。</p>"#);
    let rows: Vec<Vec<String>> = r
        .datasets
        .iter()
        .map(|d| {
            vec![
                title(&d.dataset),
                name(&d.provider),
                frequency(&d.update_frequency),
                n(d.updates_applied),
                n(d.update_days),
                bad(u64::from(d.days_overdue)),
                n(d.longest_gap_days),
                bad(d.rejected_lines),
                n(d.disputes.received),
                n(d.disputes.on_time),
                bad(d.disputes.late as u64),
                bad(d.disputes.open_overdue as u64),
            ]
        })
        .collect();
    b.push_str(&table(
        "datasets-table",
        &["数据集", "提供部门", "更新频率", "更新条数", "有更新的天数", "逾期天数", "最长间隔(天)", "被拒绝行", "异议收到", "按时办结", "逾期办结", "逾期未结"],
        &rows,
    ));
    for d in r.datasets.iter().filter(|d| !d.providers.is_empty()) {
        let rows: Vec<Vec<String>> = d
            .providers
            .iter()
            .map(|p| vec![name(&p.provider), n(p.updates_applied), n(p.update_days), bad(u64::from(p.days_overdue)), n(p.longest_gap_days)])
            .collect();
        let _ = write!(b, "<h3>{}：各提供部门</h3>", title(&d.dataset));
        b.push_str(&table(&format!("providers-{}", esc(&d.dataset)), &["提供部门", "更新条数", "有更新的天数", "逾期天数", "最长间隔(天)"], &rows));
    }
    b.push_str(r#"<h3>逾期未更新天数</h3>"#);
    let chart: Vec<(String, u64)> =
        r.datasets.iter().filter(|d| d.days_overdue > 0).map(|d| (title(&d.dataset), u64::from(d.days_overdue))).collect();
    if chart.is_empty() {
        b.push_str(r#"<p class="note" id="chart-overdue">本期间没有数据集逾期未更新。</p>"#);
    } else {
        b.push_str(&bars("chart-overdue", &chart));
    }
    b.push_str(r#"<h3>各部门提供情况</h3>"#);
    let rows: Vec<Vec<String>> = r
        .departments
        .iter()
        .filter(|d| !d.datasets_provided.is_empty())
        .map(|d| {
            vec![
                name(&d.department),
                d.datasets_provided.iter().map(|s| title(s)).collect::<Vec<_>>().join("、"),
                n(d.update_requests),
                n(d.updates_applied),
                bad(d.rejected_lines),
            ]
        })
        .collect();
    b.push_str(&table("providers-table", &["部门", "提供的数据集", "更新请求", "应用的更新", "被拒绝行"], &rows));
    b.push_str(r#"<h3>按月更新量</h3>"#);
    for d in r.datasets.iter().filter(|d| d.updates_applied > 0) {
        let _ = write!(b, "<h3>{}</h3>", title(&d.dataset));
        b.push_str(&months_chart(&format!("months-{}", esc(&d.dataset)), &d.monthly_updates));
    }
    b.push_str(r#"<h3 id="consumers">各数据集被哪些部门使用、如何使用</h3>"#);
    let unused: Vec<String> = r.datasets.iter().filter(|d| d.consumers.is_empty()).map(|d| title(&d.dataset)).collect();
    for d in r.datasets.iter().filter(|d| !d.consumers.is_empty()) {
        let rows: Vec<Vec<String>> = d
            .consumers
            .iter()
            .map(|c| {
                let mut row = vec![name(&c.department)];
                row.extend(uses_cells(&c.uses));
                row
            })
            .collect();
        let _ = write!(b, "<h3>{}（{}）</h3>", title(&d.dataset), name(&d.provider));
        b.push_str(&table(&format!("consumers-{}", esc(&d.dataset)), &["使用部门", "查询", "核验", "批量比对行", "订阅读取", "被拒绝"], &rows));
    }
    if !unused.is_empty() {
        let _ = write!(b, r#"<p class="note" id="unused">本期间无人使用：{}。</p>"#, unused.join("、"));
    }

    // (三) Use.
    b.push_str(r#"<h2 id="use">三、共享信息使用情况</h2><p class="note">惠州办法第五十一条第（三）项：使用是否超越授权范围。被拒绝的请求按原因分列：用途不在本部门可申报范围、数据类别或数据集未获授权、对取值少的字段反复试探核验。</p>"#);
    let rows: Vec<Vec<String>> = r
        .departments
        .iter()
        .filter(|d| d.uses != AnnualUses::default() || d.roles.iter().any(|x| x == "consumer"))
        .map(|d| {
            let mut row = vec![name(&d.department)];
            row.extend(uses_cells(&d.uses));
            row.extend([bad(d.refused_for_purpose), bad(d.refused_for_class), bad(d.refused_for_claim_limit), bad(d.uses_without_catalogued_purpose)]);
            row
        })
        .collect();
    b.push_str(&table(
        "use-table",
        &["部门", "查询", "核验", "批量比对行", "订阅读取", "被拒绝", "用途不符", "超出授权类别", "核验次数超限", "未按目录申报用途"],
        &rows,
    ));
    let chart: Vec<(String, u64)> = r
        .departments
        .iter()
        .map(|d| (name(&d.department), d.uses.lookups + d.uses.verifications + d.uses.batch_lines + d.uses.change_feed_reads))
        .filter(|(_, v)| *v > 0)
        .collect();
    b.push_str(r#"<h3>各部门使用量</h3>"#);
    b.push_str(&bars("chart-uses", &chart));

    // (四) Grants and disputes handled.
    b.push_str(r#"<h2 id="handling">四、授权申请与异议办理情况</h2><p class="note">有条件共享的授权申请应在规定的工作日内答复（逾期未答复视为同意的，计入“视为同意”）；异议应在规定的工作日内核查更正。按提供部门统计。</p>"#);
    let rows: Vec<Vec<String>> = r
        .departments
        .iter()
        .filter(|d| !d.datasets_provided.is_empty())
        .map(|d| {
            let mut row = vec![name(&d.department)];
            row.extend(handling_cells(&d.grants, true));
            row.extend(handling_cells(&d.disputes, false));
            row
        })
        .collect();
    b.push_str(&table(
        "handling-table",
        &HANDLING_HEAD,
        &rows,
    ));
    let mut total = vec!["合计".to_owned()];
    total.extend(handling_cells(&r.grants, true));
    total.extend(handling_cells(&r.disputes, false));
    let mut head = HANDLING_HEAD;
    head[0] = "";
    b.push_str(&table("handling-total", &head, &[total]));

    // Complaints: honest about what the platform does not see.
    b.push_str(r#"<h2 id="complaints">五、投诉情况</h2><p class="note" id="complaints-note">部门之间的投诉（广州规定第三十六条、惠州办法第五十八条）向主管部门提出，不经本平台办理，本平台没有投诉记录；请由主管部门补充。</p>"#);
    b.push_str("</body></html>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::schema::{AnnualConsumer, AnnualDataset, AnnualDepartment};

    fn report() -> AnnualReport {
        AnnualReport {
            year: 2026,
            from: "2025-12-31T16:00:00Z".into(),
            to: "2026-12-04T03:00:00Z".into(),
            first_day: "2026-01-01".into(),
            last_day: "2026-12-04".into(),
            complete: false,
            days: 338,
            calendar_covers_year: true,
            generated_at: "2026-12-04T03:00:00Z".into(),
            grants: AnnualHandling { received: 2, answered: 2, on_time: 1, late: 1, ..Default::default() },
            disputes: AnnualHandling::default(),
            departments: vec![AnnualDepartment {
                department: "gongan".into(),
                name: "公安<局>".into(),
                roles: vec!["provider".into()],
                purpose_mode: "transitional".into(),
                responsible_record: "missing".into(),
                responsible_as_of: None,
                responsible_persons: 0,
                datasets_provided: vec!["hukou".into()],
                update_requests: 3,
                updates_applied: 7,
                rejected_lines: 1,
                uses: AnnualUses::default(),
                uses_without_catalogued_purpose: 0,
                refused_for_purpose: 0,
                refused_for_class: 0,
                refused_for_claim_limit: 0,
                grants: AnnualHandling::default(),
                disputes: AnnualHandling::default(),
            }],
            datasets: vec![AnnualDataset {
                dataset: "hukou".into(),
                title: "户籍".into(),
                provider: "gongan".into(),
                update_frequency: "realtime".into(),
                updates_applied: 7,
                rejected_lines: 1,
                monthly_updates: vec![7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                update_days: 1,
                days_overdue: 300,
                longest_gap_days: 330,
                days_before_first_update: 0,
                providers: Vec::new(),
                consumers: vec![AnnualConsumer { department: "gongan".into(), uses: AnnualUses { lookups: 4, ..Default::default() } }],
                grants: AnnualHandling::default(),
                disputes: AnnualHandling::default(),
            }],
        }
    }

    #[test]
    fn names_are_escaped_and_warnings_shown() {
        let doc = render(&report(), Some("/console/reports"));
        assert!(doc.contains("公安&lt;局&gt;") && !doc.contains("公安<局>"));
        assert!(doc.contains(r#"id="incomplete""#));
        assert!(doc.contains(r#"<a id="back" href="/console/reports">"#));
        assert!(!render(&report(), None).contains(r#"id="back""#));
        assert!(!doc.contains(r#"id="no-calendar""#));
        assert!(doc.contains("未登记"));
        assert!(doc.contains("50.0%"), "one of two grants answered on time");
        assert!(doc.contains(r#"id="months-hukou""#));
        assert!(doc.contains("统计期间：2026-01-01 至 2026-12-04") && doc.contains("2026-12-04 11:00（北京时间）"));
    }
}
