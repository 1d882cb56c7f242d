//! Counter pages (窗口): look a person or an organization up, verify
//! claimed values, apply for conditional fields, and print the "who used
//! my data" report for a person at the counter. Key numbers come in POST
//! bodies only and are shown masked.

use super::html::{csrf_field, esc, notice, table, Page};
use super::{key_reason, need, query_error, CsrfForm};
use crate::http::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use basedata_query::gov::GrantKind;
use basedata_query::governance::{Application, DisputeFiling};
use basedata_query::{Caller, Department, Withheld};
use basedata_store::catalog::{Field, FieldType, Share};
use basedata_store::Catalog;
use basedata_store::keys::DocType;
use basedata_store::{Subject, SubjectKey, Value};
use std::fmt::Write;
use crate::accounts::session::Session;
use crate::accounts::staff::StaffRole;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/counter", get(counter_page))
        .route("/console/counter/lookup", post(lookup))
        .route("/console/counter/verify", get(verify_page).post(verify))
        .route("/console/counter/grant", post(apply_grant))
        .route("/console/counter/dispute", post(file_dispute))
        .route("/console/report", get(report_page).post(report))
}

/// Most characters of the particulars added to a purpose (the whole
/// purpose stays within the audit log's 500).
const PURPOSE_NOTE_CHARS: usize = 200;

/// Purposes offered at the counter of a department without a purpose list
/// (Art. 25: every use states one); the person may add particulars.
const PURPOSES: &[&str] = &["办理社会保险业务", "办理户籍相关业务", "办理婚姻登记业务", "办理市场主体登记业务", "核实申请人身份", "行政审批材料核验"];

/// The purposes a clerk of `dept` chooses from: its catalogued purposes
/// (code, name) when it has a list, else the counter's free-text ones.
fn offered(dept: &Department, catalog: &Catalog) -> Vec<(String, String)> {
    match &dept.purposes {
        Some(codes) => codes
            .iter()
            .map(|c| (c.clone(), catalog.purpose(c).map_or_else(|| c.clone(), |p| format!("{}（{c}）", p.name))))
            .collect(),
        None => PURPOSES.iter().map(|p| ((*p).to_owned(), (*p).to_owned())).collect(),
    }
}

fn purpose_fields(form_id: &str, dept: &Department, catalog: &Catalog) -> String {
    let mut s = format!(r#"<label for="{form_id}-purpose">用途</label><select id="{form_id}-purpose" name="purpose" required>"#);
    for (value, title) in offered(dept, catalog) {
        let _ = write!(s, r#"<option value="{}">{}</option>"#, esc(&value), esc(&title));
    }
    let _ = write!(
        s,
        r#"</select><label for="{form_id}-purpose-note">用途说明（可选，例如业务编号）</label><input id="{form_id}-purpose-note" name="purpose_note" maxlength="{PURPOSE_NOTE_CHARS}">"#
    );
    s
}

/// The purpose of a submitted form: one of the offered ones, with the
/// person's particulars appended — after `; ` for a catalogued code (the
/// statement syntax the purpose rules read), else after a colon.
fn purpose_of(f: &super::Form, dept: &Department, catalog: &Catalog) -> Result<String, String> {
    let p = f.get("purpose").ok_or("请选择用途")?;
    if !offered(dept, catalog).iter().any(|(v, _)| v == p) {
        return Err("请选择列出的用途之一".into());
    }
    let sep = if dept.purposes.is_some() { "; " } else { "：" };
    match f.get("purpose_note") {
        // Refused rather than cut: the audit log holds what was stated.
        Some(n) => match text_refusal("用途说明", n, PURPOSE_NOTE_CHARS) {
            Some(why) => Err(why),
            None => Ok(format!("{p}{sep}{n}")),
        },
        None => Ok(p.to_owned()),
    }
}

/// Why the form's `text` (shown to the clerk as `what`) may not go on
/// record, if it may not: the audit trail's rule for short text, with the
/// count to cut it to.
fn text_refusal(what: &str, text: &str, max_chars: usize) -> Option<String> {
    use basedata_store::audit::{audit_text_fault, TextFault};
    match audit_text_fault(text, max_chars)? {
        TextFault::TooLong => {
            Some(format!("{what}最多 {max_chars} 个字符，现有 {} 个，请删减后重新提交", text.chars().count()))
        }
        TextFault::Unfit => Some(format!("{what}含有控制字符或格式字符")),
    }
}

/// The purpose of a grant application: a choice of the department's
/// purposes when it has a list, else free text.
fn grant_purpose_field(ds: &str, dept: &Department, catalog: &Catalog) -> String {
    match dept.purposes {
        Some(_) => purpose_fields(&format!("grant-{}", esc(ds)), dept, catalog),
        None => format!(r#"<label for="grant-{ds}-purpose">申请用途</label><input id="grant-{ds}-purpose" name="purpose" required maxlength="500">"#, ds = esc(ds)),
    }
}

fn subject_fields(form_id: &str, entity_first: bool) -> String {
    let (p, e) = if entity_first { ("", " checked") } else { (" checked", "") };
    format!(
        r#"<fieldset class="inline"><legend>对象</legend><label><input type="radio" name="subject" value="person" id="{form_id}-person"{p}> 自然人（公民身份号码）</label><label><input type="radio" name="subject" value="entity" id="{form_id}-entity"{e}> 法人和其他组织（统一社会信用代码）</label></fieldset>"#
    )
}

/// The document a number belongs to, when it is not the subject's own
/// (citizen ID, credit code): passports, permits, residence cards and
/// business licences, as the API's `id_type`.
const OTHER_DOCUMENTS: [(&str, &str); 4] = [
    ("passport", "护照"),
    ("hk_macao_taiwan_permit", "港澳台居民通行证"),
    ("foreign_permanent_residence", "外国人永久居留身份证"),
    ("business_licence", "营业执照注册号（无统一社会信用代码的组织）"),
];

/// The 证件类型 choice of a form whose number field is `{form_id}-key`.
pub(super) fn id_type_select(form_id: &str) -> String {
    let mut options = String::from(r#"<option value="" selected>公民身份号码或统一社会信用代码</option>"#);
    for (value, title) in OTHER_DOCUMENTS {
        options.push_str(&format!(r#"<option value="{value}">{title}</option>"#));
    }
    format!(r#"<label for="{form_id}-id-type">证件类型</label><select id="{form_id}-id-type" name="id_type">{options}</select>"#)
}

/// The other document a form's `id_type` names, whichever its subject.
pub(super) fn other_document(name: &str) -> Option<DocType> {
    OTHER_DOCUMENTS.iter().any(|(v, _)| *v == name).then(|| DocType::ALL.into_iter().find(|d| d.as_str() == name)).flatten()
}

fn key_field(form_id: &str) -> String {
    format!(
        r#"{}<label for="{form_id}-key">号码</label><input id="{form_id}-key" name="key" class="keynum" data-keycheck="{form_id}" autocomplete="off" spellcheck="false" maxlength="40" required aria-describedby="{form_id}-key-hint"><p id="{form_id}-key-hint" class="hint" aria-live="polite"></p>"#,
        id_type_select(form_id)
    )
}

/// Reads the subject and key of a form; the error explains the reason.
/// The number and the stated purpose of a lookup or verification form,
/// or the notice saying which of the two is wrong.
fn key_and_purpose(f: &super::Form, caller: &Caller, catalog: &Catalog) -> Result<(SubjectKey, String), String> {
    let key = key_of(f).map_err(|m| notice("error", "invalid_key", &m))?;
    let purpose = purpose_of(f, &caller.department, catalog).map_err(|m| notice("error", "purpose_required", &m))?;
    Ok((key, purpose))
}

fn key_of(f: &super::Form) -> Result<SubjectKey, String> {
    let subject = match f.get("subject") {
        Some("entity") => Subject::Entity,
        _ => Subject::Person,
    };
    let raw = f.get("key").ok_or("请输入号码")?;
    let doc = match f.get("id_type") {
        None => subject.doc_type(),
        Some(name) => DocType::for_subject(subject, name).ok_or_else(|| {
            let title = OTHER_DOCUMENTS.iter().find(|(v, _)| *v == name).map_or(name, |(_, t)| *t);
            format!("{title}不是{}的证件，请另选对象或证件类型", if subject == Subject::Person { "自然人" } else { "法人和其他组织" })
        })?,
    };
    SubjectKey::parse_doc(doc, raw).map_err(|e| format!("号码无效：{}", key_reason(e.reason())))
}

/// A key number as the counter shows it (GB/T 35273: masked on display).
pub fn masked(k: &SubjectKey) -> String {
    k.masked().to_string()
}

async fn counter_page(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Clerk) {
        return r;
    }
    let csrf = csrf_field(&session.csrf);
    let body = format!(
        r#"<section class="card"><h2>查询</h2><form method="post" action="/console/counter/lookup" id="lookup">{csrf}{}{}{}<button id="lookup-btn" type="submit">查询</button></form></section>
<section class="card"><h2>核验</h2><p>只比对申请人提供的信息是否与登记一致，不显示登记内容。</p><p><a id="verify-link" href="/console/counter/verify?dataset=hukou">核验自然人信息</a> · <a href="/console/counter/verify?dataset=market_registration">核验企业信息</a></p></section>"#,
        subject_fields("lookup", false),
        key_field("lookup"),
        purpose_fields("lookup", &session.staff.caller().department, &state.catalog)
    );
    Page::new("查询核验", body).signed(&session, "counter").into_response()
}

/// A stored value for display: codes with their titles, person keys masked.
fn show(field: Option<&Field>, v: &Value) -> String {
    match v {
        Value::Key(k) => esc(&masked(k)),
        Value::Code(c) => {
            let title = field.and_then(|f| f.codes.iter().find(|x| &x.value == c)).map(|x| x.title.as_str());
            match title {
                Some(t) => format!("{} <span class=\"muted\">({})</span>", esc(t), esc(c)),
                None => esc(c),
            }
        }
        Value::Bytes(b) => format!("<span class=\"muted\">[二进制数据 {} 字节]</span>", b.len()),
        other => match other.to_json() {
            serde_json::Value::String(s) => esc(&s),
            j => esc(&j.to_string()),
        },
    }
}

fn withheld_reason(w: Withheld) -> &'static str {
    match w {
        Withheld::NoGrant => "有条件共享，未获授权",
        Withheld::OtherPurpose => "有条件共享，授权用于其他用途",
        Withheld::NotShared => "不予共享",
    }
}

fn share_title(s: Share) -> &'static str {
    match s {
        Share::Unconditional => "无条件共享",
        Share::Conditional => "有条件共享",
        Share::None => "不予共享",
    }
}

async fn lookup(State(state): State<AppState>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Clerk) {
        return r;
    }
    let page = |body: String| Page::new("查询结果", body).signed(&session, "counter").into_response();
    let back = r#"<p><a href="/console/counter">返回查询</a></p>"#;
    let caller = session.staff.caller();
    let (key, purpose) = match key_and_purpose(&form, &caller, &state.catalog) {
        Ok(kp) => kp,
        Err(n) => return page(format!("{n}{back}")),
    };
    let caller = match state.queries.admit_purpose(&caller, &purpose).await {
        Ok(c) => c,
        Err(e) => return page(format!("{}{back}", query_error(&e))),
    };
    let result = match state.queries.lookup(&caller, &purpose, key, None, None).await {
        Ok(r) => r,
        Err(e) => return page(format!("<p>号码：<span class=\"keynum\" id=\"shown-key\">{}</span></p>{}{back}", esc(&masked(&key)), query_error(&e))),
    };
    let mut body = format!(
        r#"<p>号码：<span class="keynum" id="shown-key">{}</span> · 用途：{}</p>"#,
        esc(&masked(&key)),
        esc(&purpose)
    );
    // A dispute about a value shown here names the subject by a handle
    // the session keeps: the number is never written into the page.
    let handle = state.accounts.sessions.remember_subject(&session.id, key);
    for d in &result.datasets {
        let Some(ds) = state.catalog.dataset(&d.dataset) else { continue };
        let rows: Vec<Vec<String>> = d
            .fields
            .iter()
            .map(|(n, v)| {
                let f = ds.field(n);
                vec![esc(f.map_or(n.as_str(), |f| f.title.as_str())), format!(r#"<span data-field="{}.{}">{}</span>"#, esc(&d.dataset), esc(n), show(f, v))]
            })
            .collect();
        let dispute = match &handle {
            Some(h) => dispute_form(&session, h, ds, d.fields.iter().map(|(n, _)| n.as_str())),
            None => String::new(),
        };
        let _ = write!(
            body,
            r#"<section class="card"><h2>{} <span class="muted">{} · 版本 {} · 更新于 {}</span></h2>{}{dispute}</section>"#,
            esc(&ds.title),
            esc(&ds.provider_name),
            d.version,
            esc(&super::auditor::cst(d.updated_at)),
            table(&format!("ds-{}", d.dataset), &["信息项", "内容"], &rows)
        );
    }
    if !result.withheld.is_empty() {
        // Grouped by reason: what may be applied for stays open, what is
        // never shared is folded away (it can be long).
        let _ = write!(body, r#"<section class="card"><h2>未显示的信息项（{} 项）</h2><div id="withheld">"#, result.withheld.len());
        for (reason, open, id) in [
            (Withheld::NoGrant, " open", "withheld-conditional"),
            (Withheld::OtherPurpose, " open", "withheld-other-purpose"),
            (Withheld::NotShared, "", "withheld-none"),
        ] {
            let rows: Vec<Vec<String>> = result
                .withheld
                .iter()
                .filter(|w| w.reason == reason)
                .map(|w| {
                    let ds = state.catalog.dataset(&w.dataset);
                    let f = ds.and_then(|d| d.field(&w.field));
                    let why = f.and_then(|f| if w.reason == Withheld::NotShared { f.legal_basis.clone() } else { f.condition.clone() });
                    vec![
                        esc(ds.map_or(w.dataset.as_str(), |d| d.title.as_str())),
                        format!(r#"<span data-withheld="{}.{}">{}</span>"#, esc(&w.dataset), esc(&w.field), esc(f.map_or(w.field.as_str(), |f| f.title.as_str()))),
                        share_title(w.share).to_owned(),
                        why.map(|y| esc(&y)).unwrap_or_default(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                let _ = write!(
                    body,
                    r#"<details{open}><summary>{}（{} 项）</summary>{}</details>"#,
                    withheld_reason(reason),
                    rows.len(),
                    table(id, &["数据集", "信息项", "共享类型", "条件或依据"], &rows)
                );
            }
        }
        body.push_str("</div>");
        // Conditional fields may be applied for, one application per dataset.
        let mut by_dataset: Vec<(&str, Vec<&str>)> = Vec::new();
        // (A field granted for another purpose may be applied for under this one.)
        for w in result.withheld.iter().filter(|w| matches!(w.reason, Withheld::NoGrant | Withheld::OtherPurpose)) {
            match by_dataset.iter_mut().find(|(d, _)| *d == w.dataset) {
                Some((_, f)) => f.push(&w.field),
                None => by_dataset.push((&w.dataset, vec![&w.field])),
            }
        }
        for (ds_id, fields) in by_dataset {
            let ds = state.catalog.dataset(ds_id);
            let mut boxes = String::new();
            for f in &fields {
                let title = ds.and_then(|d| d.field(f)).map_or(*f, |x| x.title.as_str());
                let _ = write!(boxes, r#"<label><input type="checkbox" name="fields" value="{}" checked> {}</label>"#, esc(f), esc(title));
            }
            let _ = write!(
                body,
                r#"<details><summary id="grant-{ds}-open">申请使用「{}」的有条件共享信息项</summary><form method="post" action="/console/counter/grant" id="grant-{ds}">{}<input type="hidden" name="dataset" value="{ds}"><fieldset class="inline"><legend>信息项</legend>{boxes}</fieldset>{purpose}<label for="grant-{ds}-basis">依据</label><input id="grant-{ds}-basis" name="legal_basis" required maxlength="500"><button type="submit" id="grant-{ds}-submit">提交申请</button></form></details>"#,
                esc(ds.map_or(ds_id, |d| d.title.as_str())),
                csrf_field(&session.csrf),
                ds = esc(ds_id),
                purpose = grant_purpose_field(ds_id, &session.staff.caller().department, &state.catalog),
            );
        }
        body.push_str("</section>");
    }
    body.push_str(back);
    page(body)
}

/// Most characters of a disputed value or a dispute's note typed at the
/// counter.
const DISPUTE_TEXT_CHARS: usize = 500;

/// The form that files a dispute (异议) about one of `fields` of `ds` as
/// shown, for the subject the session keeps under `handle`.
fn dispute_form<'a>(session: &Session, handle: &str, ds: &basedata_store::catalog::Dataset, fields: impl Iterator<Item = &'a str>) -> String {
    let mut options = String::new();
    for name in fields {
        // A value typed at the counter cannot stand for binary data.
        let Some(f) = ds.field(name).filter(|f| !matches!(f.ty, FieldType::Bytes)) else { continue };
        let _ = write!(options, r#"<option value="{}">{}</option>"#, esc(&f.name), esc(&f.title));
    }
    if options.is_empty() {
        return String::new();
    }
    format!(
        r#"<details><summary id="dispute-{ds}-open">对登记内容提出异议</summary><form method="post" action="/console/counter/dispute" id="dispute-{ds}">{}<input type="hidden" name="subject_ref" value="{}"><input type="hidden" name="dataset" value="{ds}"><label for="dispute-{ds}-field">信息项</label><select id="dispute-{ds}-field" name="field" required>{options}</select><label for="dispute-{ds}-claimed">认为正确的值</label><input id="dispute-{ds}-claimed" name="claimed" required maxlength="{DISPUTE_TEXT_CHARS}" autocomplete="off"><label for="dispute-{ds}-note">说明（例如申请人提供的证明材料）</label><input id="dispute-{ds}-note" name="note" maxlength="{DISPUTE_TEXT_CHARS}"><button type="submit" id="dispute-{ds}-submit">提交异议</button></form></details>"#,
        csrf_field(&session.csrf),
        esc(handle),
        ds = esc(&ds.id),
    )
}

/// Files a dispute from a lookup's result: the same use case as `POST
/// /v1/disputes`, audited with the signed-in clerk.
async fn file_dispute(State(state): State<AppState>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Clerk) {
        return r;
    }
    let page = |body: String| Page::new("提出异议", body).signed(&session, "counter").into_response();
    let back = r#"<p><a href="/console/counter">返回查询</a></p>"#;
    let Some(key) = form.get("subject_ref").and_then(|h| state.accounts.sessions.subject(&session.id, h)) else {
        return page(format!("{}{back}", notice("error", "invalid_value", "查询结果已失效，请重新查询后再提出异议。")));
    };
    let shown = format!(r#"<p>号码：<span class="keynum" id="shown-key">{}</span></p>"#, esc(&masked(&key)));
    let Some(ds) = form.get("dataset").and_then(|d| state.catalog.dataset(d)) else {
        return page(format!("{shown}{}{back}", notice("error", "unknown_dataset", "请从查询结果中选择数据集")));
    };
    let Some(field) = form.get("field") else {
        return page(format!("{shown}{}{back}", notice("error", "invalid_value", "请选择有异议的信息项")));
    };
    let Some(claimed) = form.get("claimed") else {
        return page(format!("{shown}{}{back}", notice("error", "invalid_value", "请填写认为正确的值")));
    };
    let note = form.get("note");
    for (what, text) in [("认为正确的值", Some(claimed)), ("说明", note)] {
        let Some(text) = text else { continue };
        // Refused rather than cut, like the purpose's particulars.
        if let Some(m) = text_refusal(what, text, DISPUTE_TEXT_CHARS) {
            return page(format!("{shown}{}{back}", notice("error", "invalid_value", &m)));
        }
    }
    let subject = key.subject().to_string();
    let claimed_value = serde_json::Value::String(claimed.to_owned());
    let filing = DisputeFiling {
        subject: &subject,
        key: key.as_str(),
        id_type: key.other_doc_type().map(DocType::as_str),
        dataset: &ds.id,
        field,
        claimed: &claimed_value,
        note,
    };
    match state.queries.file_dispute(&session.staff.caller(), &filing).await {
        Ok(d) => {
            let field_title = ds.field(&d.field).map_or(d.field.as_str(), |f| f.title.as_str());
            let message = format!(
                "已提出异议，{}应在 {} 前核查并答复。",
                if ds.provider_name.is_empty() { ds.provider.as_str() } else { ds.provider_name.as_str() },
                basedata_store::value::format_date(d.due_date())
            );
            page(format!(
                r#"{}{shown}<p>异议编号：<span id="dispute-id">{}</span> · {} · {} · 认为正确的值：{}</p>{back}"#,
                notice("ok", "opened", &message),
                esc(&d.id),
                esc(&ds.title),
                esc(field_title),
                esc(&d.claimed),
            ))
        }
        Err(e) => page(format!("{shown}{}{back}", query_error(&e))),
    }
}

/// A claimed value from a text box as the JSON the verification expects.
fn claim(field: &Field, text: &str) -> serde_json::Value {
    match field.ty {
        FieldType::Integer => text.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| text.into()),
        FieldType::Bool => match text {
            "true" | "是" => true.into(),
            "false" | "否" => false.into(),
            _ => text.into(),
        },
        _ => text.into(),
    }
}

#[derive(serde::Deserialize)]
struct VerifyParams {
    dataset: Option<String>,
}

async fn verify_page(State(state): State<AppState>, session: Session, q: axum::extract::Query<VerifyParams>) -> Response {
    if let Err(r) = need(&session, StaffRole::Clerk) {
        return r;
    }
    let ds_id = q.dataset.as_deref().unwrap_or("hukou");
    let Some(ds) = state.catalog.dataset(ds_id) else {
        return super::html::error_page(axum::http::StatusCode::NOT_FOUND, "unknown_dataset", "没有这个数据集").into_response();
    };
    let mut pick = String::from(r#"<form method="get" action="/console/counter/verify" class="inline"><label for="verify-dataset">数据集</label><select id="verify-dataset" name="dataset">"#);
    for d in state.catalog.datasets() {
        let sel = if d.id == ds.id { " selected" } else { "" };
        let _ = write!(pick, r#"<option value="{}"{sel}>{}</option>"#, esc(&d.id), esc(&d.title));
    }
    pick.push_str(r#"</select><button type="submit" id="verify-switch">切换</button></form>"#);
    let mut inputs = String::new();
    for f in ds.fields.iter().filter(|f| !matches!(f.ty, FieldType::Bytes)) {
        let hint = match f.ty {
            FieldType::Date => "（YYYY-MM-DD）",
            FieldType::Code if !f.codes.is_empty() => "",
            _ => "",
        };
        let codes: Vec<String> = f.codes.iter().map(|c| format!("{}={}", c.value, c.title)).collect();
        let codes = if codes.is_empty() { String::new() } else { format!(r#"<span class="muted">{}</span>"#, esc(&codes.join("，"))) };
        let _ = write!(
            inputs,
            r#"<label for="claim-{n}">{}{hint} {codes}</label><input id="claim-{n}" name="f.{n}" maxlength="500" autocomplete="off">"#,
            esc(&f.title),
            n = esc(&f.name)
        );
    }
    let entity = ds.subject == Subject::Entity;
    let body = format!(
        r#"{pick}<section class="card"><form method="post" action="/console/counter/verify" id="verify">{}<input type="hidden" name="dataset" value="{}">{}{}{}<fieldset><legend>申请人提供的信息（填写要核验的项）</legend>{inputs}</fieldset><button id="verify-btn" type="submit">核验</button></form></section>"#,
        csrf_field(&session.csrf),
        esc(&ds.id),
        subject_fields("verify", entity),
        key_field("verify"),
        purpose_fields("verify", &session.staff.caller().department, &state.catalog),
    );
    Page::new(format!("核验 · {}", ds.title), body).signed(&session, "counter").into_response()
}

fn verdict_title(v: &str) -> &'static str {
    match v {
        "match" => "一致",
        "mismatch" => "不一致",
        "no_value" => "无登记值",
        "not_found" => "无此记录",
        _ => "—",
    }
}

async fn verify(State(state): State<AppState>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Clerk) {
        return r;
    }
    let page = |body: String| Page::new("核验结果", body).signed(&session, "counter").into_response();
    let back = r#"<p><a href="/console/counter/verify">返回核验</a></p>"#;
    let Some(ds) = form.get("dataset").and_then(|d| state.catalog.dataset(d)) else {
        return page(format!("{}{back}", notice("error", "unknown_dataset", "请选择数据集")));
    };
    let caller = session.staff.caller();
    let (key, purpose) = match key_and_purpose(&form, &caller, &state.catalog) {
        Ok(kp) => kp,
        Err(n) => return page(format!("{n}{back}")),
    };
    let mut claims = serde_json::Map::new();
    for (k, v) in &form.0 {
        let (Some(name), v) = (k.strip_prefix("f."), v.trim()) else { continue };
        if v.is_empty() {
            continue;
        }
        let Some(f) = ds.field(name) else {
            return page(format!("{}{back}", notice("error", "unknown_field", &format!("没有信息项 {name}"))));
        };
        claims.insert(name.to_owned(), claim(f, v));
    }
    if claims.is_empty() {
        return page(format!("{}{back}", notice("error", "invalid_body", "请至少填写一项要核验的信息")));
    }
    let caller = match state.queries.admit_purpose(&caller, &purpose).await {
        Ok(c) => c,
        Err(e) => return page(format!("{}{back}", query_error(&e))),
    };
    let v = match state.queries.verify(&caller, &purpose, key, Some(&ds.id), &claims).await {
        Ok(v) => v,
        Err(e) => return page(format!("{}{back}", query_error(&e))),
    };
    let rows: Vec<Vec<String>> = v
        .fields
        .iter()
        .map(|(n, verdict)| {
            let title = ds.field(n).map_or(n.as_str(), |f| f.title.as_str());
            vec![esc(title), format!(r#"<span class="verdict {0}" data-verdict="{1}">{2}</span>"#, verdict.as_str(), esc(n), verdict_title(verdict.as_str()))]
        })
        .collect();
    let overall = v.outcome.as_str();
    let body = format!(
        r#"<p>号码：<span class="keynum" id="shown-key">{}</span> · {} · 用途：{}</p><p class="result {overall}" id="verify-result" data-result="{overall}">核验结论：{}</p>{}{back}"#,
        esc(&masked(&key)),
        esc(&ds.title),
        esc(&purpose),
        verdict_title(overall),
        table("verdicts", &["信息项", "结果"], &rows)
    );
    page(body)
}

async fn apply_grant(State(state): State<AppState>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Clerk) {
        return r;
    }
    let page = |body: String| Page::new("授权申请", body).signed(&session, "counter").into_response();
    let dataset = form.get("dataset").unwrap_or("");
    let fields: Vec<String> = form.all("fields").into_iter().map(str::to_owned).collect();
    let caller = session.staff.caller();
    // A department with a purpose list applies for one of its purposes.
    let purpose = match caller.department.purposes {
        Some(_) => match purpose_of(&form, &caller.department, &state.catalog) {
            Ok(p) => Some(p),
            Err(m) => return page(format!(r#"{}<p><a href="/console/counter">返回查询</a></p>"#, notice("error", "purpose_required", &m))),
        },
        None => form.get("purpose").map(str::to_owned),
    };
    let application = Application {
        dataset,
        kind: GrantKind::Fields,
        fields: &fields,
        purpose: purpose.as_deref(),
        legal_basis: form.get("legal_basis"),
    };
    let body = match state.queries.apply_grant(&caller, &application).await {
        Ok(g) => notice(
            "ok",
            "pending",
            &format!("已提交申请（编号 {}），提供部门应在 {} 前答复；逾期未答复视为同意。", g.id, basedata_store::value::format_date(g.due_date())),
        ),
        Err(e) => query_error(&e),
    };
    page(format!(r#"{body}<p><a href="/console/counter">返回查询</a></p>"#))
}

async fn report_page(session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Clerk) {
        return r;
    }
    let body = format!(
        r#"<section class="card"><p>本人持有效证件到窗口查询时，可打印其信息的全部使用记录：使用部门、用途、时间和内容。打印本身也会记入审计日志。</p><form method="post" action="/console/report" id="report">{}{}{}<button id="report-btn" type="submit">生成告知单</button></form></section>"#,
        csrf_field(&session.csrf),
        subject_fields("report", false),
        key_field("report"),
    );
    Page::new("使用记录告知", body).signed(&session, "report").into_response()
}

/// What an action means, for a citizen.
pub fn action_title(a: &str) -> &'static str {
    match a {
        "lookup" => "查询",
        "verify" => "核验",
        "batch_verify" => "批量比对",
        "change_feed" => "变更订阅",
        "update" => "更新",
        "denied" => "被拒绝的使用",
        "grant" => "授权",
        "dispute" => "异议",
        "sign_in" => "登录",
        "access_report" => "打印使用记录告知单",
        "account" => "账号管理",
        "responsible" => "责任人登记",
        "policy" => "共享规则调整",
        "retention" => "超过保存期限的使用记录清理",
        _ => "其他",
    }
}

/// What a use touched, in words a citizen reads: each dataset's title with
/// the titles of its fields (`户籍登记信息：姓名、性别`).
pub(super) fn what_was_used(state: &AppState, datasets: &[String], fields: &[String]) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for f in fields {
        let (ds, name) = match f.split_once('.') {
            Some((d, n)) => (d.to_owned(), n),
            None => (datasets.first().cloned().unwrap_or_default(), f.as_str()),
        };
        let title = state.catalog.dataset(&ds).and_then(|d| d.field(name)).map_or(name.to_owned(), |x| x.title.clone());
        match groups.iter_mut().find(|(d, _)| *d == ds) {
            Some((_, t)) => t.push(title),
            None => groups.push((ds, vec![title])),
        }
    }
    for d in datasets {
        if !groups.iter().any(|(g, _)| g == d) {
            groups.push((d.clone(), Vec::new()));
        }
    }
    groups
        .into_iter()
        .map(|(d, titles)| {
            let ds = state.catalog.dataset(&d).map_or(d, |x| x.title.clone());
            if titles.is_empty() {
                ds
            } else {
                format!("{ds}：{}", titles.join("、"))
            }
        })
        .collect::<Vec<_>>()
        .join("；")
}

/// A tag of `key` that only this session can make: it ties the pages of
/// one access report to one number without writing the number down.
fn report_tag(session: &Session, key: &SubjectKey) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(session.id.as_bytes());
    h.update(b"\0access-report\0");
    h.update(key.to_string().as_bytes());
    hex::encode(h.finalize())
}

async fn report(State(state): State<AppState>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Clerk) {
        return r;
    }
    let back = r#"<p class="noprint"><a href="/console/report">返回</a></p>"#;
    let page = |body: String| Page::new("信息使用记录告知单", body).signed(&session, "report").into_response();
    let key = match key_of(&form) {
        Ok(k) => k,
        Err(m) => return page(format!("{}{back}", notice("error", "invalid_key", &m))),
    };
    // A later page starts after the last entry of the one before, for the
    // same number: the page carries a tag of the number keyed by the
    // session id (which no page shows), and the number typed again must
    // match it.
    let tag = report_tag(&session, &key);
    // Where the page before ended, in the order of every node's uses (a
    // cluster's trail holds them all).
    let after = form.get("after").map(str::trim).filter(|a| !a.is_empty());
    // A page number only labels the page; kept far from overflowing.
    let page_no: u64 = form.get("page").and_then(|a| a.parse().ok()).unwrap_or(1).clamp(1, 1_000_000_000);
    if after.is_some() && !form.get("key_tag").is_some_and(|t| crate::accounts::session::same_token(t, &tag)) {
        return page(format!("{}{back}", notice("error", "invalid_value", "号码与上一页的不一致：请输入同一号码，或重新生成告知单。")));
    }
    let after = match after.map(basedata_store::audit::AuditCursor::parse) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => return page(format!("{}{back}", notice("error", "invalid_value", "分页位置无效：请重新生成告知单。"))),
    };
    let local = state.node_name();
    let report = match state.queries.access_report(&session.staff.caller(), "本人查询信息使用记录", key, after, local).await {
        Ok(r) => r,
        Err(e) => return page(format!("{}{back}", query_error(&e))),
    };
    let entries = &report.entries;
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let what = what_was_used(&state, &e.datasets, &e.fields);
            vec![
                esc(&super::auditor::cst(e.at)),
                super::department_label(&state, &e.department),
                esc(&e.purpose),
                action_title(e.action.as_str()).to_owned(),
                esc(&what),
            ]
        })
        .collect();
    let now = super::auditor::cst(state.queries.grants.now());
    let count = match (report.more, page_no) {
        (false, 1) => format!("共 {} 条使用记录。", entries.len()),
        (more, n) => format!(
            "第 {n} 页，{} 条使用记录{}",
            entries.len(),
            if more { "；后面还有记录，见下一页。" } else { "（最后一页）。" }
        ),
    };
    // The next page is asked for with the number typed again: the full
    // number is never written into a page.
    let next = match &report.next {
        Some(cursor) => format!(
            r#"<section class="card noprint" id="next-page"><p>每页最多 {} 条。打印下一页请再次输入号码：</p><form method="post" action="/console/report" id="report-next">{}<input type="hidden" name="after" value="{}"><input type="hidden" name="page" value="{}"><input type="hidden" name="key_tag" value="{tag}">{}{}<button id="report-next-btn" type="submit">下一页</button></form></section>"#,
            basedata_query::oversight::MAX_ACCESS_REPORT,
            csrf_field(&session.csrf),
            esc(&cursor.to_string()),
            page_no + 1,
            subject_fields("report", key.subject() == Subject::Entity),
            key_field("report"),
        ),
        None => String::new(),
    };
    let body = format!(
        r#"<p>号码：<span class="keynum" id="shown-key">{}</span> · 打印时间：{} · 经办：{}（{}）</p><p id="report-count">{count}</p>{}<p class="noprint"><button type="button" id="print-btn" data-print>打印</button></p>{next}{back}"#,
        esc(&masked(&key)),
        esc(&now),
        esc(session.staff.display()),
        esc(&session.staff.department.name),
        table("access-report", &["时间", "使用部门", "用途", "方式", "内容"], &rows),
    );
    page(body)
}

#[cfg(test)]
mod tests {
    use super::text_refusal;

    /// The clerk is told which text to mend and how: cut to the count, or
    /// rid of a character the audit trail refuses; text that fits passes.
    #[test]
    fn a_text_too_long_or_unfit_is_refused_with_what_to_mend() {
        assert_eq!(text_refusal("说明", "业务编号 12", 20), None);
        assert_eq!(text_refusal("说明", &"字".repeat(21), 20).unwrap(), "说明最多 20 个字符，现有 21 个，请删减后重新提交");
        assert_eq!(text_refusal("说明", "一行\n两行", 20).unwrap(), "说明含有控制字符或格式字符");
        assert_eq!(text_refusal("说明", "\u{202E}反向", 20).unwrap(), "说明含有控制字符或格式字符");
    }
}
