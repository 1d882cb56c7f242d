//! The administrator's page of staff accounts: who may sign in, with what,
//! whether an account is locked after failed sign-ins and how many
//! sessions it has; an administrator unlocks an account or signs a person
//! out everywhere, each action audited. Accounts themselves are added,
//! disabled and given new passwords in the configuration
//! (`basedata staff-password`).

use super::html::{csrf_field, esc, notice, table, Page};
use super::{need, CsrfForm};
use crate::accounts::session::Session;
use crate::accounts::staff::StaffRole;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use basedata_store::audit::Action;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/admin/staff", get(staff_page))
        .route("/console/admin/staff/{id}/unlock", post(unlock))
        .route("/console/admin/staff/{id}/sign-out", post(sign_out))
}

fn render(state: &AppState, session: &Session, message: String) -> Response {
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
            let csrf = csrf_field(&session.csrf);
            let mut actions = String::new();
            if failures > 0 {
                actions.push_str(&format!(
                    r#"<form method="post" action="/console/admin/staff/{id}/unlock" class="decide">{csrf}<button type="submit" id="unlock-{id}">解除锁定</button></form>"#,
                    id = esc(&s.id)
                ));
            }
            if sessions > 0 {
                actions.push_str(&format!(
                    r#"<form method="post" action="/console/admin/staff/{id}/sign-out" class="decide">{csrf}<button type="submit" class="refuse" id="sign-out-{id}">强制退出</button></form>"#,
                    id = esc(&s.id)
                ));
            }
            vec![
                format!(r#"<span data-staff="{0}">{0}</span>"#, esc(&s.id)),
                esc(&s.name),
                esc(&s.department.id),
                s.roles.iter().map(|r| r.title()).collect::<Vec<_>>().join("、"),
                how.to_owned(),
                format!(r#"<span data-status="{}">{status}</span>"#, esc(&s.id)),
                sessions.to_string(),
                actions,
            ]
        })
        .collect();
    let body = format!(
        r#"{message}<section class="card"><p class="muted">添加账号、停用账号和重设密码在配置文件的 [[staff]] 中进行（密码散列由 <code>basedata staff-password</code> 生成），重启后生效。</p>{}</section>"#,
        table("staff", &["工号", "姓名", "部门", "角色", "登录方式", "状态", "会话", "操作"], &rows)
    );
    Page::new("账号管理", body).signed(session, "admin").into_response()
}

async fn staff_page(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    render(&state, &session, String::new())
}

/// Records an administrator's action on an account, then shows the page.
async fn act(state: &AppState, session: &Session, id: &str, outcome: &str, done: &str) -> Response {
    let mut ev = session.staff.caller().event("账号管理", Action::Account, None);
    ev.outcome = format!("{outcome} {id}");
    let message = match state.queries.record(vec![ev], basedata_store::WriteBatch::new()).await {
        Ok(()) => notice("ok", outcome, done),
        Err(e) => super::query_error(&e),
    };
    render(state, session, message)
}

async fn unlock(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, .. }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    if state.accounts.staff.get(&id).is_none() {
        return render(&state, &session, notice("error", "not_found", "没有这个账号"));
    }
    state.accounts.staff.unlock(&id);
    act(&state, &session, &id, "unlocked", &format!("已解除 {id} 的锁定。")).await
}

async fn sign_out(State(state): State<AppState>, Path(id): Path<String>, CsrfForm { session, .. }: CsrfForm) -> Response {
    if let Err(r) = need(&session, StaffRole::Admin) {
        return r;
    }
    if state.accounts.staff.get(&id).is_none() {
        return render(&state, &session, notice("error", "not_found", "没有这个账号"));
    }
    let n = state.accounts.sessions.end_for(&id);
    act(&state, &session, &id, "signed_out", &format!("已结束 {id} 的 {n} 个会话。")).await
}
