//! The console's HTML: the page frame with its navigation and small
//! building blocks, beside the shared ones of `crate::html` (escaping,
//! tables, bar charts). Pages are rendered on the server from plain
//! strings; every value from data or input goes through [`esc`].

use crate::accounts::staff::{Staff, StaffRole};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
pub use crate::html::{bars, esc, table};
use std::fmt::Write;

/// The hidden CSRF field of a form.
pub fn csrf_field(token: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(token))
}

/// The security headers of every console answer: no framing, no inline
/// or foreign script or style, no caching of pages that show personal data.
pub fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// A rendered page.
pub struct Page {
    pub status: StatusCode,
    pub title: String,
    pub body: String,
    /// The signed-in person and the session's CSRF token, for the header.
    pub who: Option<(std::sync::Arc<Staff>, String)>,
    /// Which navigation entry is current.
    pub nav: &'static str,
}

impl Page {
    pub fn new(title: impl Into<String>, body: String) -> Page {
        Page { status: StatusCode::OK, title: title.into(), body, who: None, nav: "" }
    }

    pub fn signed(mut self, session: &crate::accounts::session::Session, nav: &'static str) -> Page {
        self.who = Some((session.staff.clone(), session.csrf.clone()));
        self.nav = nav;
        self
    }

    pub fn status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }
}

/// Navigation entries: (key, path, title, who may use it).
const NAV: &[(&str, &str, &str, StaffRole)] = &[
    ("counter", "/console/counter", "查询核验", StaffRole::Clerk),
    ("report", "/console/report", "使用记录告知", StaffRole::Clerk),
    ("steward", "/console/steward", "数据管护", StaffRole::Steward),
    ("audit", "/console/audit", "审计日志", StaffRole::Auditor),
    ("queues", "/console/queues", "申请与异议", StaffRole::Auditor),
    ("reports", "/console/reports", "统计报表", StaffRole::Auditor),
    ("admin", "/console/admin/staff", "账号管理", StaffRole::Admin),
];

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut html = String::with_capacity(self.body.len() + 2048);
        html.push_str(r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">"#);
        html.push_str(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#);
        let _ = write!(html, "<title>{} · 基础数据共享平台</title>", esc(&self.title));
        html.push_str(r#"<link rel="stylesheet" href="/console/assets/console.css">"#);
        html.push_str(r#"<script src="/console/assets/console.js" defer></script></head><body>"#);
        html.push_str(r##"<a class="skip" href="#main">跳到正文</a><header class="top"><span class="brand">基础数据共享平台</span>"##);
        if let Some((staff, csrf)) = &self.who {
            html.push_str(r#"<nav aria-label="主导航"><ul>"#);
            for (key, path, title, role) in NAV {
                if staff.may(*role) {
                    let current = if *key == self.nav { r#" aria-current="page""# } else { "" };
                    let _ = write!(html, r#"<li><a id="nav-{key}" href="{path}"{current}>{title}</a></li>"#);
                }
            }
            html.push_str("</ul></nav>");
            let roles: Vec<&str> = staff.roles.iter().map(|r| r.title()).collect();
            let _ = write!(
                html,
                r#"<div class="who"><span id="who">{} · {} · {}</span><form method="post" action="/console/logout">{}<button id="logout" type="submit">退出</button></form></div>"#,
                esc(staff.display()),
                esc(if staff.department.name.is_empty() { &staff.department.id } else { &staff.department.name }),
                roles.join("、"),
                csrf_field(csrf)
            );
        }
        let _ = write!(html, r#"</header><main id="main"><h1>{}</h1>{}</main></body></html>"#, esc(&self.title), self.body);
        let mut resp = (self.status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
        resp = secure(resp);
        resp
    }
}

/// An error shown as a page, with a stable code for people and tests.
pub fn error_page(status: StatusCode, code: &str, message: &str) -> Page {
    Page::new("出错了", format!(r#"<p class="error" role="alert" data-code="{}">{}</p><p><a href="/console/">返回首页</a></p>"#, esc(code), esc(message)))
        .status(status)
}

/// A message box inside a page.
pub fn notice(kind: &str, code: &str, message: &str) -> String {
    format!(r#"<p class="{kind}" role="{}" data-code="{}">{}</p>"#, if kind == "error" { "alert" } else { "status" }, esc(code), esc(message))
}
