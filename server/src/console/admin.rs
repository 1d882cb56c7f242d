//! The administrator's page of staff accounts: who may sign in, with what,
//! whether an account is locked after failed sign-ins and how many
//! sessions it has. An administrator unlocks an account or signs a person
//! out everywhere, and adds accounts held in the store, disables and
//! re-enables them and resets their passwords; every action is audited
//! (`account`) together with the change it makes. Accounts of the
//! configuration are shown read-only.

use super::html::{csrf_field, esc, notice, table, Page};
use super::{need, CsrfForm, Form};
use crate::accounts::session::Session;
use crate::accounts::staff::{self, AccountError, Change, NewAccount, StaffRole};
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use basedata_query::replicated::Expect;
use basedata_query::staff::StaffRecord;
use basedata_store::audit::Action;
use std::fmt::Write;
use tokio::sync::OwnedMutexGuard;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/admin/staff", get(staff_page).post(add))
        .route("/console/admin/staff/{id}/unlock", post(unlock))
        .route("/console/admin/staff/{id}/sign-out", post(sign_out))
        .route("/console/admin/staff/{id}/disable", post(disable))
        .route("/console/admin/staff/{id}/enable", post(enable))
        .route("/console/admin/staff/{id}/reset", post(reset))
}

/// The purpose recorded for account changes.
const PURPOSE: &str = "账号管理";

/// A small form posting to `/console/admin/staff/{id}/{what}` with one button.
fn button(id: &str, what: &str, title: &str, class: &str, csrf: &str) -> String {
    format!(
        r#"<form method="post" action="/console/admin/staff/{id}/{what}" class="decide">{csrf}<button type="submit"{class} id="{what}-{id}">{title}</button></form>"#,
        id = esc(id),
        csrf = csrf_field(csrf),
        class = if class.is_empty() { String::new() } else { format!(r#" class="{class}""#) },
    )
}

/// The fields of a new password: typed twice, or generated and shown once.
fn password_fields(prefix: &str) -> String {
    format!(
        r#"<label for="{prefix}-password">新密码（至少 {min} 个字符）</label><input id="{prefix}-password" name="password" type="password" autocomplete="new-password" maxlength="{max}">
<label for="{prefix}-password2">再次输入新密码</label><input id="{prefix}-password2" name="password2" type="password" autocomplete="new-password" maxlength="{max}">
<label class="check"><input type="checkbox" id="{prefix}-generate" name="generate" value="1"> 不填写，由系统生成密码（仅显示一次）</label>"#,
        min = staff::MIN_PASSWORD_CHARS,
        max = staff::MAX_PASSWORD_CHARS,
    )
}

fn render(state: &AppState, session: &Session, message: String) -> Response {
    let csrf = &session.csrf;
    let rows: Vec<Vec<String>> = state
        .accounts
        .staff
        .all()
        .iter()
        .map(|s| {
            let (failures, locked) = state.accounts.staff.failures(&s.id);
            let sessions = state.accounts.sessions.count_for(&s.id);
            let status = if s.disabled {
                "已停用".to_owned()
            } else if locked {
                r#"<span class="overdue">已锁定</span>"#.to_owned()
            } else if failures > 0 {
                format!("正常（连续失败 {failures} 次）")
            } else {
                "正常".to_owned()
            };
            let how = match (s.password.is_some(), s.cert_subject.is_some()) {
                (true, true) => "密码、证书",
                (true, false) => "密码",
                _ => "证书",
            };
            let mut actions = String::new();
            if failures > 0 {
                actions.push_str(&button(&s.id, "unlock", "解除锁定", "", csrf));
            }
            if sessions > 0 {
                actions.push_str(&button(&s.id, "sign-out", "强制退出", "refuse", csrf));
            }
            let source = if s.stored() {
                if s.disabled {
                    actions.push_str(&button(&s.id, "enable", "启用", "", csrf));
                } else {
                    actions.push_str(&button(&s.id, "disable", "停用", "refuse", csrf));
                }
                let _ = write!(
                    actions,
                    r#"<details><summary id="reset-open-{id}">重设密码</summary><form method="post" action="/console/admin/staff/{id}/reset" id="reset-form-{id}">{}{}<button type="submit" id="reset-{id}">重设密码</button></form></details>"#,
                    csrf_field(csrf),
                    password_fields(&format!("reset-{}", esc(&s.id))),
                    id = esc(&s.id)
                );
                "系统内"
            } else {
                actions.push_str(r#"<span class="muted">在配置文件中管理</span>"#);
                "配置文件"
            };
            vec![
                format!(r#"<span data-staff="{0}">{0}</span>"#, esc(&s.id)),
                esc(&s.name),
                super::department_label(state, &s.department.id),
                s.roles.iter().map(|r| r.title()).collect::<Vec<_>>().join("、"),
                how.to_owned(),
                format!(r#"<span data-source="{}">{source}</span>"#, esc(&s.id)),
                format!(r#"<span data-status="{}">{status}</span>"#, esc(&s.id)),
                sessions.to_string(),
                actions,
            ]
        })
        .collect();
    let mut body = message;
    let _ = write!(
        body,
        r#"<section class="card"><p class="muted">“配置文件”中的账号只能在配置文件的 [[staff]] 中修改（重启后生效）；“系统内”的账号在此页或用 <code>basedata staff</code> 命令添加、停用和重设密码，立即生效。停用账号或重设密码会立即结束其会话。</p>{}</section>"#,
        table("staff", &["工号", "姓名", "部门", "角色", "登录方式", "管理方式", "状态", "会话", "操作"], &rows)
    );
    if !state.accounts.staff.left_out().is_empty() {
        let rows: Vec<Vec<String>> = state.accounts.staff.left_out().iter().map(|(id, why)| vec![esc(id), esc(why)]).collect();
        let _ = write!(
            body,
            r#"<section class="card"><h2>未启用的系统内账号</h2><p class="muted">这些账号与当前配置不符（部门或角色已变，或工号已在配置文件中定义），不能登录。</p>{}</section>"#,
            table("left-out", &["工号", "原因"], &rows)
        );
    }
    let mut depts = String::new();
    for d in state.departments.iter() {
        let _ = write!(depts, r#"<option value="{}">{}</option>"#, esc(&d.id), super::department_label(state, &d.id));
    }
    let mut roles = String::new();
    for r in StaffRole::ALL {
        let _ = write!(roles, r#"<label><input type="checkbox" name="roles" value="{0}" id="new-role-{0}"> {1}</label>"#, r.as_str(), r.title());
    }
    let _ = write!(
        body,
        r#"<section class="card"><h2>添加账号</h2><form method="post" action="/console/admin/staff" id="add-staff">{}<div class="grid"><div><label for="new-id">工号（字母、数字、. _ -）</label><input id="new-id" name="id" required maxlength="64" autocomplete="off"></div><div><label for="new-name">姓名</label><input id="new-name" name="name" maxlength="64" autocomplete="off"></div><div><label for="new-department">部门</label><select id="new-department" name="department" required>{depts}</select></div></div><fieldset class="inline"><legend>角色</legend>{roles}</fieldset>{}<button type="submit" id="add-btn">添加</button></form></section>"#,
        csrf_field(csrf),
        password_fields("new"),
    );
    Page::new("账号管理", body).signed(session, "admin").into_response()
}

async fn staff_page(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    render(&state, &session, String::new())
}

/// Makes an administrator's `change` to an account once its audit entry
/// is durable, then shows the page saying what was `done` (from what the
/// change returned). The change runs on the writer, after the entry: a
/// request given up meanwhile still makes it, and an entry the writer
/// refuses (its queue full) leaves no change made unrecorded.
async fn act<T: Send + 'static>(
    state: &AppState,
    session: &Session,
    id: &str,
    outcome: &str,
    change: impl FnOnce() -> T + Send + 'static,
    done: impl FnOnce(T) -> String,
) -> Response {
    let mut ev = session.staff.caller().event(PURPOSE, Action::Account, None);
    ev.outcome = format!("{outcome} {id}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let made = move || {
        let _ = tx.send(change());
    };
    let message = match state.queries.record_then(vec![ev], basedata_store::WriteBatch::new(), made).await {
        // Sent before the commit's answer, so it is there.
        Ok(()) => match rx.await {
            Ok(t) => notice("ok", outcome, &done(t)),
            Err(_) => notice("error", "internal", "操作未完成，请重试。"),
        },
        Err(e) => super::query_error(&e),
    };
    render(state, session, message)
}

async fn unlock(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, .. }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    if state.accounts.staff.get(&id).is_none() {
        return refused(&state, &session, &AccountError::NotFound);
    }
    let (accounts, whom) = (state.accounts.clone(), id.clone());
    act(&state, &session, &id, "unlocked", move || accounts.staff.unlock(&whom), |()| format!("已解除 {id} 的锁定。")).await
}

async fn sign_out(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, .. }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    if state.accounts.staff.get(&id).is_none() {
        return refused(&state, &session, &AccountError::NotFound);
    }
    let (accounts, whom) = (state.accounts.clone(), id.clone());
    let ended = move || accounts.sessions.end_for(&whom);
    act(&state, &session, &id, "signed_out", ended, |n| format!("已结束 {id} 的 {n} 个会话。")).await
}

fn refused(state: &AppState, session: &Session, e: &AccountError) -> Response {
    render(state, session, notice("error", e.code(), &e.message_zh()))
}

/// The new password of a form: typed twice alike, or generated (returned
/// as the second value, to be shown once); hashed off the async threads.
async fn new_password(form: &Form) -> Result<(String, Option<String>), String> {
    let refuse = |code: &str, text: &str| Err(notice("error", code, text));
    let generated = form.get("generate").is_some().then(staff::generate_password);
    let password = match &generated {
        Some(p) => p.clone(),
        None => {
            let (a, b) = (form.raw("password").unwrap_or(""), form.raw("password2").unwrap_or(""));
            if a != b {
                return refuse("invalid_value", "两次输入的密码不一致。");
            }
            if let Err(e) = staff::check_password(a) {
                return refuse(e.code(), &e.message_zh());
            }
            a.to_owned()
        }
    };
    match tokio::task::spawn_blocking(move || staff::hash_password(&password)).await {
        Ok(Ok(h)) => Ok((h, generated)),
        _ => refuse("unavailable", "暂时无法生成密码散列，请稍后再试。"),
    }
}

/// Commits `record` with its audit entry, takes it in and shows the page
/// with `done` (and a generated password, once).
async fn commit(
    state: &AppState,
    session: &Session,
    record: StaffRecord,
    verb: &str,
    done: String,
    generated: Option<String>,
    expect: Expect,
    one_at_a_time: OwnedMutexGuard<()>,
) -> Response {
    let mut ev = session.staff.caller().event(PURPOSE, Action::Account, None);
    ev.outcome = format!("{verb} {}", record.id);
    // Taken in (and the former version's sessions ended) by the account
    // book's hook once committed: here, and on every node of a cluster.
    // Stored by a task of its own that holds the change lock to the end,
    // so a request given up meanwhile cannot let the next change be
    // checked against the account book as it was before this one.
    let (queries, stored) = (state.queries.clone(), record.clone());
    let task = tokio::spawn(async move {
        let r = queries.store_staff(stored, expect, ev).await;
        drop(one_at_a_time);
        r
    });
    let stored = task.await.unwrap_or_else(|e| Err(basedata_query::Error::Internal(format!("storing the account failed: {e}"))));
    if let Err(e) = stored {
        return render(state, session, super::query_error(&e));
    }
    let mut message = notice("ok", verb, &done);
    if let Some(p) = generated {
        let _ = write!(
            message,
            r#"<p class="ok" role="status">{} 的密码（仅显示这一次，请当面交给本人）：<code id="generated-password">{}</code></p>"#,
            esc(&record.id),
            esc(&p)
        );
    }
    render(state, session, message)
}

async fn add(State(state): State<AppState>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    let roles: Result<Vec<StaffRole>, AccountError> =
        form.all("roles").into_iter().map(|r| StaffRole::parse(r).ok_or_else(|| AccountError::UnknownRole(r.to_owned()))).collect();
    let account = match roles {
        Ok(roles) => NewAccount {
            id: form.get("id").unwrap_or("").to_owned(),
            name: form.get("name").unwrap_or("").to_owned(),
            department: form.get("department").unwrap_or("").to_owned(),
            roles,
        },
        Err(e) => return refused(&state, &session, &e),
    };
    let one_at_a_time = state.accounts.changing.clone().lock_owned().await;
    // The cheap checks first, so that a mistake costs no hashing.
    if let Err(e) = state.accounts.staff.check_new(&account) {
        return refused(&state, &session, &e);
    }
    let (hash, generated) = match new_password(&form).await {
        Ok(p) => p,
        Err(m) => return render(&state, &session, m),
    };
    match state.accounts.staff.new_record(&account, hash, &session.staff.id, state.queries.store.clock().now_micros()) {
        Ok(record) => {
            let done = format!("已添加账号 {}。", record.id);
            commit(&state, &session, record, "added", done, generated, Expect::Absent, one_at_a_time).await
        }
        Err(e) => refused(&state, &session, &e),
    }
}

async fn change(state: AppState, session: Session, id: String, change: Change, done: String, generated: Option<String>) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    let one_at_a_time = state.accounts.changing.clone().lock_owned().await;
    match state.accounts.staff.changed_record(&id, &change, &session.staff.id, state.queries.store.clock().now_micros()) {
        Ok((record, from)) => commit(&state, &session, record, change.verb(), done, generated, Expect::ChangedAt(from), one_at_a_time).await,
        Err(e) => refused(&state, &session, &e),
    }
}

async fn disable(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, .. }: CsrfForm) -> Response {
    let done = format!("已停用账号 {id}，其会话已结束。");
    change(state, session, id, Change::Disable, done, None).await
}

async fn enable(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, .. }: CsrfForm) -> Response {
    let done = format!("已启用账号 {id}。");
    change(state, session, id, Change::Enable, done, None).await
}

async fn reset(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, form }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    // A configured or unknown account is refused before any hashing.
    if let Err(e) = state.accounts.staff.stored_account(&id) {
        return refused(&state, &session, &e);
    }
    let (hash, generated) = match new_password(&form).await {
        Ok(p) => p,
        Err(m) => return render(&state, &session, m),
    };
    let done = format!("已重设 {id} 的密码，其会话已结束。");
    change(state, session, id, Change::Reset(hash), done, generated).await
}
