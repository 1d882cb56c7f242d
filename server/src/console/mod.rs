//! The people's console: web pages, served by the same binary under
//! `/console/`, for counter clerks, providers' data stewards and auditors,
//! with staff accounts that sign in. A page is one more transport over the
//! same use cases as the API (`basedata_query::Queries`), under the same
//! rules, with the signed-in person as the audit trail's verified
//! operator.
//!
//! Security: sessions in an HttpOnly, SameSite=Strict cookie limited to
//! `/console` (Secure over TLS) with an idle expiry; a CSRF token in every
//! form that changes anything ([`CsrfForm`] is the only way a handler gets
//! a form); a strict Content-Security-Policy (assets are files, no inline
//! script); key numbers travel only in POST bodies, never in URLs; every
//! sign-in and failure is audited, and repeated failures lock the account.

mod admin;
mod auditor;
mod counter;
pub mod html;
mod steward;

use crate::http::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use basedata_store::audit::{Action, AuditEvent};
use html::{error_page, esc, notice, Page};
use crate::accounts::session::{self, same_token, Session, COOKIE, PRE_COOKIE};
use crate::accounts::staff::{self, SignInError, StaffRole};
use std::sync::Arc;

/// The purpose recorded for sign-ins.
const SIGN_IN_PURPOSE: &str = "控制台登录";

/// The console's routes; `state` for the admission layer.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/login/cert", post(login_cert))
        .route("/console/logout", post(logout))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .merge(counter::routes())
        .merge(steward::routes())
        .merge(auditor::routes())
        .merge(admin::routes())
        // Unknown console paths answer as a page, not as the API's JSON.
        .route("/console/{*rest}", axum::routing::any(|| async { error_page(StatusCode::NOT_FOUND, "not_found", "没有这个页面") }))
        // Forms are small; a larger body is no console request.
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .layer(axum::middleware::from_fn_with_state(state.clone(), admit))
}

/// A signed-in person's requests count against their department's rate
/// and concurrency caps like its API requests, so that pages are no way
/// around them. The permit is held until the page is rendered.
async fn admit(State(state): State<AppState>, req: Request, next: axum::middleware::Next) -> Response {
    let Some(session) = cookie_value(req.headers(), COOKIE).and_then(|id| state.accounts.session(id)) else {
        return next.run(req).await;
    };
    let department = &session.staff.department;
    match department.limits.admit() {
        Ok(_permit) => next.run(req).await,
        Err(r) => {
            state.metrics.refused(&department.id, r.reason);
            let mut resp = error_page(StatusCode::TOO_MANY_REQUESTS, "overloaded", &format!("本部门请求过多，请 {} 秒后重试。", r.retry_after_secs))
                .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(r.retry_after_secs));
            resp
        }
    }
}

/// Whether the request came over TLS (the connection layer says so).
fn over_tls(ext: &axum::http::Extensions) -> bool {
    ext.get::<axum::extract::ConnectInfo<crate::tls::TlsPeer>>().is_some_and(|c| c.0.tls)
}

/// A cookie of the console: never readable by script, never sent by
/// another site's request, only to `/console`.
fn cookie(name: &str, value: &str, max_age: Option<u64>, tls: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    if tls {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie of hex and fixed text")
}

/// The value of cookie `name`, if the request has exactly one.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for h in headers.get_all(header::COOKIE) {
        for part in h.to_str().ok()?.split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == name {
                    if found.is_some() {
                        // Two cookies of one name: one may have been planted.
                        return None;
                    }
                    found = Some(v);
                }
            }
        }
    }
    found
}

/// A request without a live session is sent to sign in.
impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        cookie_value(&parts.headers, COOKIE)
            .and_then(|id| state.accounts.session(id))
            .ok_or_else(|| html::secure(Redirect::to("/console/login").into_response()))
    }
}

/// A submitted form.
#[derive(Debug, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// The first value of `name`, trimmed; blank is `None`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every non-blank value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty()).collect()
    }

    /// The first value of `name` exactly as sent (passwords).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn parse(bytes: &[u8]) -> Result<Form, Response> {
        serde_urlencoded::from_bytes(bytes)
            .map(Form)
            .map_err(|_| error_page(StatusCode::BAD_REQUEST, "invalid_body", "表单无法解析").into_response())
    }
}

/// A form posted within a session, its CSRF token checked: the only way a
/// console handler receives a form, so no change can skip the check.
pub struct CsrfForm {
    pub session: Session,
    pub form: Form,
}

impl FromRequest<AppState> for CsrfForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, 64 << 10)
            .await
            .map_err(|_| error_page(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "表单过大").into_response())?;
        let form = Form::parse(&bytes)?;
        match form.get("csrf") {
            Some(t) if same_token(t, &session.csrf) => Ok(CsrfForm { session, form }),
            _ => Err(error_page(StatusCode::FORBIDDEN, "csrf_failed", "请求缺少有效的防伪令牌，已拒绝。请刷新页面后重试。").into_response()),
        }
    }
}

/// Refuses a page to a person without `role`.
pub fn need(session: &Session, role: StaffRole) -> Result<(), Response> {
    if session.staff.may(role) {
        Ok(())
    } else {
        Err(error_page(StatusCode::FORBIDDEN, "forbidden", &format!("此页面仅供{}使用", role.title())).into_response())
    }
}

/// The first page a person may use.
async fn home(session: Option<Session>) -> Response {
    let Some(s) = session else { return Redirect::to("/console/login").into_response() };
    let to = if s.staff.may(StaffRole::Clerk) {
        "/console/counter"
    } else if s.staff.may(StaffRole::Steward) {
        "/console/steward"
    } else {
        "/console/audit"
    };
    html::secure(Redirect::to(to).into_response())
}

impl axum::extract::OptionalFromRequestParts<AppState> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        Ok(cookie_value(&parts.headers, COOKIE).and_then(|id| state.accounts.session(id)))
    }
}

/// The verified client certificate's subject, over mutual TLS.
fn peer_subject(ext: &axum::http::Extensions) -> Option<Arc<crate::cert::CertSubject>> {
    ext.get::<axum::extract::ConnectInfo<crate::tls::TlsPeer>>().and_then(|c| c.0.subject.clone())
}

fn login_form(token: &str, cert_staff: Option<&str>, message: &str) -> String {
    let mut b = String::new();
    b.push_str(message);
    b.push_str(&format!(
        r#"<form class="card narrow" method="post" action="/console/login" id="login-form">{}
<label for="staff-id">工号</label><input id="staff-id" name="id" autocomplete="username" required maxlength="64" autofocus>
<label for="password">密码</label><input id="password" name="password" type="password" autocomplete="current-password" required maxlength="256">
<button id="login" type="submit">登录</button></form>"#,
        html::csrf_field(token)
    ));
    if let Some(who) = cert_staff {
        b.push_str(&format!(
            r#"<form class="card narrow" method="post" action="/console/login/cert">{}<p>已出示数字证书：{}</p><button id="login-cert" type="submit">使用数字证书登录</button></form>"#,
            html::csrf_field(token),
            esc(who)
        ));
    }
    b
}

/// The sign-in page; its CSRF token is a fresh random value in a cookie
/// and in the form, which must agree when it comes back.
async fn login_page(State(state): State<AppState>, req: Request) -> Response {
    let token = session::random_token();
    let tls = over_tls(req.extensions());
    let cert_staff = peer_subject(req.extensions()).and_then(|s| state.accounts.staff.by_subject(&s).map(|st| st.display().to_owned()));
    let mut resp = Page::new("工作人员登录", login_form(&token, cert_staff.as_deref(), "")).into_response();
    resp.headers_mut().append(header::SET_COOKIE, cookie(PRE_COOKIE, &token, Some(900), tls));
    resp
}

/// Records one sign-in attempt in the audit trail.
async fn audit_sign_in(state: &AppState, department: &str, operator: Option<&str>, verified: bool, outcome: &str) -> Result<(), Response> {
    let ev = AuditEvent {
        department: department.to_owned(),
        operator: operator.map(str::to_owned),
        operator_verified: verified,
        purpose: SIGN_IN_PURPOSE.to_owned(),
        purpose_code: None,
        action: Action::SignIn,
        key: None,
        datasets: Vec::new(),
        fields: Vec::new(),
        outcome: outcome.to_owned(),
        key_mapped: false,
        pid: None,
        rejected_lines: 0,
        grants: Vec::new(),
    };
    state.queries.record(vec![ev], basedata_store::WriteBatch::new()).await.map_err(|e| {
        tracing::error!(code = e.code(), error = %e, "cannot record a sign-in");
        error_page(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "暂时无法登录，请稍后再试").into_response()
    })
}

/// Starts a session for `staff` and sends the person to their first page.
fn start_session(state: &AppState, staff: Arc<staff::Staff>, tls: bool) -> Response {
    let s = state.accounts.sessions.create(staff);
    let mut resp = Redirect::to("/console/").into_response();
    resp.headers_mut().append(header::SET_COOKIE, cookie(COOKIE, &s.id, None, tls));
    resp.headers_mut().append(header::SET_COOKIE, cookie(PRE_COOKIE, "", Some(0), tls));
    html::secure(resp)
}

/// The sign-in form's token against its cookie.
fn check_pre_token(headers: &HeaderMap, form: &Form) -> Result<(), Response> {
    match (cookie_value(headers, PRE_COOKIE), form.get("csrf")) {
        (Some(c), Some(f)) if !c.is_empty() && same_token(c, f) => Ok(()),
        _ => Err(error_page(StatusCode::FORBIDDEN, "csrf_failed", "登录表单已失效，请重新打开登录页。").into_response()),
    }
}

/// A sign-in form: read (64 KiB at most), parsed, and its pre-session
/// CSRF token checked.
async fn sign_in_form(req: Request) -> Result<Form, Response> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return Err(error_page(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "表单过大").into_response());
    };
    let form = Form::parse(&bytes)?;
    check_pre_token(&parts.headers, &form)?;
    Ok(form)
}

async fn login(State(state): State<AppState>, req: Request) -> Response {
    let tls = over_tls(req.extensions());
    let form = match sign_in_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let id = form.get("id").unwrap_or("").to_owned();
    let password = form.raw("password").unwrap_or_default().to_owned();
    // An id that could not be a staff id is not written into the audit
    // log as an operator (it could hold anything); it still fails alike.
    let recorded_id = staff::valid_id(&id).then(|| id.clone());
    // The check and its audit entry are one step, run to its end in a task
    // of its own: a failed attempt counts towards locking the account, so
    // a client that goes away before the answer must not leave a counted
    // failure (or a lock) with no entry in the audit trail.
    let checked = tokio::spawn({
        let state = state.clone();
        async move {
            let book = state.clone();
            let attempt = tokio::task::spawn_blocking({
                let id = id.clone();
                move || book.accounts.staff.sign_in(&id, &password)
            })
            .await;
            let result = attempt.ok()?;
            let department = state.accounts.staff.get(&id).map(|s| s.department.id.clone()).unwrap_or_else(|| "console".into());
            let outcome = result.as_ref().err().map_or("ok", |e| e.code());
            let audited = audit_sign_in(&state, &department, recorded_id.as_deref(), result.is_ok(), outcome).await;
            Some((result, audited))
        }
    });
    let Ok(Some((result, audited))) = checked.await else {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "暂时无法登录").into_response();
    };
    if let Err(r) = audited {
        return r;
    }
    match result {
        Ok(staff) => start_session(&state, staff, tls),
        Err(e) => {
            let (status, message) = match e {
                SignInError::BadCredentials => (StatusCode::UNAUTHORIZED, "工号或密码不正确。".to_owned()),
                SignInError::Locked => (
                    StatusCode::FORBIDDEN,
                    format!("登录失败次数过多，账号已锁定 {} 分钟。", state.accounts.staff.rules().lockout_minutes),
                ),
                SignInError::Disabled => (StatusCode::FORBIDDEN, "账号已停用，请联系管理员。".to_owned()),
            };
            let token = session::random_token();
            let mut resp =
                Page::new("工作人员登录", login_form(&token, None, &notice("error", e.code(), &message))).status(status).into_response();
            resp.headers_mut().append(header::SET_COOKIE, cookie(PRE_COOKIE, &token, Some(900), tls));
            resp
        }
    }
}

/// Sign-in by the client certificate of a mutual-TLS connection.
async fn login_cert(State(state): State<AppState>, req: Request) -> Response {
    let tls = over_tls(req.extensions());
    let subject = peer_subject(req.extensions());
    // The form carries nothing but its CSRF token.
    if let Err(r) = sign_in_form(req).await {
        return r;
    }
    let staff = subject.and_then(|s| state.accounts.staff.by_subject(&s));
    match staff {
        Some(st) if !st.disabled => {
            if let Err(r) = audit_sign_in(&state, &st.department.id, Some(&st.id), true, "ok_certificate").await {
                return r;
            }
            start_session(&state, st, tls)
        }
        other => {
            let (dept, id) = other.map(|s| (s.department.id.clone(), Some(s.id.clone()))).unwrap_or(("console".into(), None));
            if let Err(r) = audit_sign_in(&state, &dept, id.as_deref(), false, "certificate_refused").await {
                return r;
            }
            error_page(StatusCode::UNAUTHORIZED, "certificate_refused", "该证书不对应任何可用的工作人员账号。").into_response()
        }
    }
}

async fn logout(State(state): State<AppState>, req: Request) -> Response {
    let tls = over_tls(req.extensions());
    let f = match CsrfForm::from_request(req, &state).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    state.accounts.sessions.end(&f.session.id);
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut().append(header::SET_COOKIE, cookie(COOKIE, "", Some(0), tls));
    html::secure(resp)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/console.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/console.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    html::secure(resp)
}

/// A use case's error as a message inside a page, in Chinese, with its
/// stable code.
pub fn query_error(e: &basedata_query::Error) -> String {
    use basedata_query::Error as E;
    let text = match e {
        E::NotFound(_) => "未找到记录。".to_owned(),
        E::Forbidden(m) => format!("无权进行此操作：{m}"),
        E::PurposeNotAllowed { message, .. } => format!("本部门不能以此用途使用数据：{message}"),
        E::Conflict(m) => format!("当前状态不允许此操作：{m}"),
        E::InvalidValue(m) => format!("输入有误：{m}"),
        E::UnknownDataset(m) => format!("没有这个数据集：{m}"),
        E::UnknownField(m) => format!("没有这个字段：{m}"),
        E::InvalidBody(m) => format!("输入有误：{m}"),
        E::InvalidKey(k) => format!("号码无效：{}", key_reason(k.reason())),
        E::Overloaded | E::Unavailable(_) => "系统繁忙，请稍后再试。".to_owned(),
        other => {
            tracing::error!(code = other.code(), error = %other, "console use case failed");
            "系统内部错误，已记录。".to_owned()
        }
    };
    notice("error", e.code(), &text)
}

/// A department's configured name, or its id.
pub fn department_name(state: &AppState, id: &str) -> String {
    state.departments.get(id).filter(|d| !d.name.is_empty()).map_or_else(|| id.to_owned(), |d| d.name.clone())
}

/// A dataset's catalog title, or its id.
pub fn dataset_name(state: &AppState, id: &str) -> String {
    state.catalog.dataset(id).filter(|d| !d.title.is_empty()).map_or_else(|| id.to_owned(), |d| d.title.clone())
}

/// The titles of `fields` of `dataset`, joined (a field the catalog does
/// not know shows as its name).
pub fn field_titles(state: &AppState, dataset: &str, fields: &[String]) -> String {
    let ds = state.catalog.dataset(dataset);
    fields.iter().map(|f| ds.and_then(|d| d.field(f)).map_or(f.as_str(), |x| x.title.as_str())).collect::<Vec<_>>().join("、")
}

/// A name for people with the id it stands for as a tooltip.
pub fn labelled(id: &str, name: &str) -> String {
    if name == id {
        esc(id)
    } else {
        format!(r#"<span title="{}">{}</span>"#, esc(id), esc(name))
    }
}

/// A department by its configured name, with its id as a tooltip.
pub fn department_label(state: &AppState, id: &str) -> String {
    labelled(id, &department_name(state, id))
}

/// A dataset by its catalog title, with its id as a tooltip.
pub fn dataset_label(state: &AppState, id: &str) -> String {
    labelled(id, &dataset_name(state, id))
}

/// An audit outcome in words, with the stable code as a tooltip: its
/// first word is the code (`ok`, `not_found`, `added wang.wu`, ...); what
/// follows it (an id) is kept; an unknown code shows as it is.
pub fn outcome_label(outcome: &str) -> String {
    let (code, rest) = outcome.split_once(' ').unwrap_or((outcome, ""));
    if let Some(n) = code.strip_prefix("entries=").filter(|n| n.bytes().all(|b| b.is_ascii_digit())) {
        // An access report: how many uses it listed.
        return format!(r#"<span title="{}">列出 {n} 条</span>"#, esc(outcome));
    }
    let word = match code {
        "ok" => "成功",
        "found" => "已查到",
        "not_found" => "无记录",
        "nothing_visible" => "无可显示的内容",
        "match" => "一致",
        "mismatch" => "不一致",
        "no_value" => "无登记值",
        "forbidden" => "无权使用",
        "invalid_key" => "号码无效",
        "invalid_value" | "invalid_body" => "输入有误",
        "unknown_dataset" => "无此数据集",
        "unknown_field" => "无此信息项",
        "purpose_required" => "未说明用途",
        "conflict" => "状态不允许",
        "overloaded" => "请求过多",
        "payload_too_large" => "请求过大",
        "unavailable" => "暂不可用",
        "bad_credentials" => "工号或密码错误",
        "locked" => "已锁定",
        "disabled" => "已停用",
        "ok_certificate" => "证书登录成功",
        "certificate_refused" => "证书被拒",
        "unlocked" => "解除锁定",
        "signed_out" => "强制退出",
        "added" => "添加账号",
        "enabled" => "启用账号",
        "password_reset" => "重设密码",
        "applied" => "提交申请",
        "pending" => "待答复",
        "approved" => "同意",
        "rejected" => "拒绝",
        "deemed_approved" => "视为同意",
        "revoked" => "撤销",
        "opened" => "提出异议",
        "confirmed" => "核实无误",
        "corrected" => "已更正",
        _ => return esc(outcome),
    };
    let rest = if rest.is_empty() { String::new() } else { format!(" {}", esc(rest)) };
    format!(r#"<span title="{}">{word}</span>{rest}"#, esc(outcome))
}

/// Why a key number is not valid, in words for the counter.
pub fn key_reason(reason: &str) -> &'static str {
    match reason {
        "length" => "位数不对（公民身份号码为 18 位或旧式 15 位，统一社会信用代码为 18 位）",
        "format" => "含有不允许的字符",
        "date" => "出生日期不存在",
        "checksum" => "校验位不符",
        _ => "格式不正确",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_in_words_and_keep_their_code() {
        assert_eq!(outcome_label("not_found"), r#"<span title="not_found">无记录</span>"#);
        assert_eq!(outcome_label("added wang.wu"), r#"<span title="added wang.wu">添加账号</span> wang.wu"#);
        // Unknown outcomes show as they are, escaped.
        assert_eq!(outcome_label("entries=3"), r#"<span title="entries=3">列出 3 条</span>"#);
        assert_eq!(outcome_label("submitted=3 rejected=0"), "submitted=3 rejected=0");
        assert_eq!(outcome_label("<b>"), "&lt;b&gt;");
    }
}
