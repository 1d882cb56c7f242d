//! Handler tests without sockets: the router driven by `oneshot`.

use super::*;
use crate::config::{DepartmentConfig, Role};
use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use basedata_store::clock::ManualClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::Secret;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub(crate) const TOKEN: &str = "test-counter-token-0001";

/// The test state with one department, an auditor (token
/// `test-auditor-token-01`).
fn auditor_state() -> AppState {
    let mut state = test_state();
    state.departments = Arc::new(
        Departments::from_config(&[DepartmentConfig {
            id: "audit".into(),
            roles: vec![Role::Auditor],
            token: Some("test-auditor-token-01".into()),
            ..Default::default()
        }])
        .unwrap(),
    );
    state
}

/// A department of the configuration, as the tests write them.
pub(crate) fn dept(id: &str, name: &str, roles: Vec<Role>, token: &str, purposes: Option<Vec<&str>>) -> DepartmentConfig {
    DepartmentConfig {
        id: id.into(),
        name: name.into(),
        roles,
        token: Some(token.into()),
        purposes: purposes.map(|p| p.into_iter().map(String::from).collect()),
        ..Default::default()
    }
}

pub(crate) fn test_state() -> AppState {
    state_with(&[DepartmentConfig {
        id: "counter".into(),
        name: "窗口".into(),
        roles: vec![Role::Consumer],
        token: Some(TOKEN.into()),
        token_sha256: None,
        ..Default::default()
    }])
}

/// A state over an empty in-memory store with these departments.
fn state_with(departments: &[DepartmentConfig]) -> AppState {
    let store = Store::open(
        Arc::new(MemEngine::new()),
        &Secret::from_bytes([1; 32]),
        Arc::new(Catalog::builtin()),
        Arc::new(ManualClock::new(1_763_800_000_000_000)),
    )
    .unwrap();
    AppState::new(Arc::new(store), Departments::from_config(departments).unwrap(), 1 << 20)
}

pub(crate) async fn call(req: HttpRequest<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = router(test_state()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, headers)
}

fn get(path: &str, token: Option<&str>) -> HttpRequest<Body> {
    let mut b = HttpRequest::get(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn health_needs_no_token_and_carries_request_id() {
    let (s, body, headers) = call(get("/healthz", None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert!(headers.contains_key("x-request-id"));
    let (s, body, _) = call(get("/readyz", None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn single_node_has_no_cluster_status_and_no_positions() {
    // Counters may not see it at all; an auditor would get 404 here.
    let (s, body, _) = call(get("/v1/cluster", Some(TOKEN))).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let state = auditor_state();
    let resp = router(state).oneshot(get("/v1/cluster", Some("test-auditor-token-01"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(!resp.headers().contains_key(crate::cluster::POSITION_HEADER));
    // A position asked of a single node is ignored, not waited for.
    let req = HttpRequest::get("/healthz").header(crate::cluster::MIN_POSITION_HEADER, "99").body(Body::empty()).unwrap();
    let (s, _, h) = call(req).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!h.contains_key(crate::cluster::POSITION_HEADER));
}

#[tokio::test]
async fn a_panicking_handler_is_answered_500_in_json_and_counted() {
    let state = test_state();
    let pages = Router::new().route("/boom", axum::routing::get(|| async {
        panic!("a handler's bug");
        #[allow(unreachable_code)]
        ""
    }));
    let app = router_with(state.clone(), pages);
    let req = HttpRequest::get("/boom").header("x-request-id", "boom-1").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()["x-request-id"], "boom-1", "answered through the access log");
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "internal");
    let text = state.metrics.render(&state.store, state.committer.stats());
    assert!(
        text.lines().any(|l| l.contains("route=\"/boom\"") && l.contains("status=\"500\"")),
        "the panic is counted like any answer:\n{text}"
    );
    // The server goes on answering.
    let (s, _, _) = call(get("/healthz", None)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn request_id_is_echoed_when_sane() {
    let req = HttpRequest::get("/healthz").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
    let (_, _, h) = call(req).await;
    assert_eq!(h["x-request-id"], "abc-123");
    let req = HttpRequest::get("/healthz").header("x-request-id", "bad id with spaces").body(Body::empty()).unwrap();
    let (_, _, h) = call(req).await;
    assert_ne!(h["x-request-id"], "bad id with spaces");
    // In its place, and without one, a fresh id of sixteen hex digits.
    let replaced = h["x-request-id"].to_str().unwrap().to_owned();
    let (_, _, h) = call(HttpRequest::get("/healthz").body(Body::empty()).unwrap()).await;
    let made = h["x-request-id"].to_str().unwrap().to_owned();
    for id in [&replaced, &made] {
        assert!(id.len() == 16 && id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{id}");
    }
    assert_ne!(replaced, made);
}

#[tokio::test]
async fn unauthenticated_requests_get_401() {
    for token in [None, Some("wrong-token-wrong-token")] {
        let (s, body, _) = call(get("/v1/catalog", token)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
}

#[tokio::test]
async fn key_explanations() {
    let (s, b, _) = call(get("/v1/keys/person/11010519491231002x", Some(TOKEN))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["valid"], true);
    assert_eq!(b["normalized"], "11010519491231002X");
    assert_eq!(b["birth_date"], "1949-12-31");
    assert_eq!(b["gender"], "female");
    assert_eq!(b["region"], "110105");
    let (_, b, _) = call(get("/v1/keys/entity/91350100M000100Y43", Some(TOKEN))).await;
    assert_eq!(b["organization_code"], "M000100Y4");
    assert_eq!(b["registration_authority"], "9");
    for (path, reason) in [
        ("/v1/keys/person/1234", "length"),
        ("/v1/keys/person/11010519491231002A", "format"),
        ("/v1/keys/person/110105194912310021", "checksum"),
        ("/v1/keys/person/110105194913310029", "date"),
        ("/v1/keys/entity/91350100M000100Y44", "checksum"),
    ] {
        let (s, b, _) = call(get(path, Some(TOKEN))).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(b["valid"], false, "{path}");
        assert_eq!(b["reason"], reason, "{path}");
    }
}

#[tokio::test]
async fn catalog_lists_fixed_datasets() {
    let (s, b, _) = call(get("/v1/catalog", Some(TOKEN))).await;
    assert_eq!(s, StatusCode::OK);
    let ds = b["datasets"].as_array().unwrap();
    let hukou = ds.iter().find(|d| d["id"] == "hukou").unwrap();
    assert_eq!(hukou["provider"], "gongan");
    assert_eq!(hukou["subject"], "person");
    assert_eq!(hukou["update_frequency"], "realtime");
    let photo = hukou["fields"].as_array().unwrap().iter().find(|f| f["name"] == "photo").unwrap();
    assert_eq!(photo["type"], "bytes");
    assert_eq!(photo["share"], "conditional");
    assert!(photo["condition"].as_str().is_some_and(|c| !c.is_empty()));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let (s, b, _) = call(get("/v1/nothing", Some(TOKEN))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "not_found");
    let req = HttpRequest::post("/v1/catalog").header("authorization", format!("Bearer {TOKEN}")).body(Body::empty()).unwrap();
    let (s, b, _) = call(req).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(b["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn purpose_layer_requires_a_purpose() {
    // A throwaway route behind the subject reads' layer.
    let app = Router::new()
        .route("/probe", axum::routing::get(|axum::Extension(p): axum::Extension<Purpose>| async move { p.0 }))
        .route_layer(middleware::from_fn_with_state(test_state(), authenticate_with_purpose))
        .with_state(test_state());
    // Authentication comes first: no token, no word about the purpose.
    let resp = app.clone().oneshot(HttpRequest::get("/probe").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let send = |h: Option<&'static [u8]>| {
        let app = app.clone();
        async move {
            let mut b = HttpRequest::get("/probe").header("authorization", format!("Bearer {TOKEN}"));
            if let Some(h) = h {
                b = b.header("x-purpose", axum::http::HeaderValue::from_bytes(h).unwrap());
            }
            let resp = app.oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
            let s = resp.status();
            (s, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
        }
    };
    let (s, body) = send(None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("purpose_required"));
    let (s, _) = send(Some(b"   ")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, body) = send(Some(b"%E7%A4%BE%E4%BF%9D%E5%8F%91%E6%94%BE")).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "社保发放"));
    let (s, body) = send(Some("低保复核".as_bytes())).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "低保复核"));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = router(test_state());
    let req = HttpRequest::get("/v1/catalog").header("authorization", format!("Bearer {TOKEN}")).body(Body::empty()).unwrap();
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
    let resp = app.oneshot(HttpRequest::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("basedata_http_requests_total{department=\"counter\",method=\"GET\",route=\"/v1/catalog\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("basedata_http_request_duration_seconds_bucket"));
    assert!(text.contains("basedata_dataset_records{dataset=\"hukou\"} 0"));
    assert!(text.contains("basedata_writer{stat=\"groups\"}"));
    assert!(text.contains("basedata_writer{stat=\"slices\"}"));
    assert!(text.lines().any(|l| l.starts_with("basedata_batch_spilled_bytes ")), "{text}");
    let last = basedata_store::calendar::Calendar::builtin().last_year().unwrap();
    assert!(text.lines().any(|l| l == format!("basedata_calendar_last_year {last}")), "{text}");
}

#[tokio::test]
async fn department_limits_answer_429_with_retry_after() {
    let mut state = test_state();
    state.departments = Arc::new(
        Departments::from_config(&[DepartmentConfig {
            id: "counter".into(),
            roles: vec![Role::Consumer],
            token: Some(TOKEN.into()),
            rate_limit: Some(1),
            burst: Some(2),
            ..Default::default()
        }])
        .unwrap(),
    );
    let app = router(state);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let req = HttpRequest::get("/v1/catalog").header("authorization", format!("Bearer {TOKEN}")).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
            let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
            assert_eq!(body["error"]["code"], "overloaded");
            statuses.push(429);
        } else {
            statuses.push(resp.status().as_u16());
        }
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
}

/// Every endpoint of the API contract, as (method, path template).
const CONTRACT: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/keys/person/{id}"),
    ("get", "/v1/keys/entity/{code}"),
    ("get", "/v1/catalog"),
    ("post", "/v1/datasets/{dataset}/updates"),
    ("get", "/v1/persons/{id}"),
    ("get", "/v1/entities/{code}"),
    ("post", "/v1/persons/{id}/verify"),
    ("post", "/v1/entities/{code}/verify"),
    ("post", "/v1/verify/batch"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("get", "/v1/jobs/{id}/result"),
    ("get", "/v1/changes"),
    ("post", "/v1/grants"),
    ("get", "/v1/grants"),
    ("post", "/v1/grants/{id}/decision"),
    ("post", "/v1/grants/{id}/revoke"),
    ("post", "/v1/disputes"),
    ("get", "/v1/disputes"),
    ("post", "/v1/disputes/{id}/resolution"),
    ("get", "/v1/audit"),
    ("get", "/v1/audit/verify"),
    ("get", "/v1/reports/sharing"),
    ("get", "/v1/reports/freshness"),
    ("get", "/v1/departments"),
    ("put", "/v1/departments/{id}/responsible"),
];

#[tokio::test]
async fn openapi_documents_every_contract_endpoint_and_the_router_serves_them() {
    let (s, doc, _) = call(HttpRequest::get("/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut missing = Vec::new();
    for (method, path) in CONTRACT {
        if paths.get(*path).and_then(|p| p.get(*method)).is_none() {
            missing.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(missing.is_empty(), "missing from /openapi.json: {missing:?}");
    // And every documented operation is routed (no fallback 404/405).
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "x").replace("{code}", "x").replace("{dataset}", "hukou");
            let req = HttpRequest::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap();
            let (s, body, _) = call(req).await;
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!(s == StatusCode::NOT_FOUND && body["error"]["message"] == "no such endpoint"), "{method} {path} is not routed");
        }
    }
}

#[tokio::test]
async fn extractor_rejections_are_json_errors() {
    let req = HttpRequest::get("/v1/audit?limit=-1").header("authorization", format!("Bearer {TOKEN}")).body(Body::empty()).unwrap();
    let (s, body, headers) = call(req).await;
    // The counter is no auditor, but the query is rejected first either way.
    assert!(s == StatusCode::BAD_REQUEST || s == StatusCode::FORBIDDEN, "{s}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    assert!(body["error"]["code"].is_string(), "{body}");
    let req = HttpRequest::get("/v1/changes?wait=soon")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-purpose", "p")
        .body(Body::empty())
        .unwrap();
    let (s, body, _) = call(req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_value");
}

/// An access report comes in pages of `MAX_ACCESS_REPORT` entries, each
/// starting after the last one before, until every use is listed.
#[tokio::test]
async fn access_reports_page_through_every_use() {
    use basedata_query::oversight::MAX_ACCESS_REPORT;
    let state = test_state();
    let g = basedata_gen::GenConfig { persons: 2, entities: 0, seed: 5 };
    let key = basedata_store::SubjectKey::Person(basedata_gen::person_key(&g, 0));
    let other = basedata_store::SubjectKey::Person(basedata_gen::person_key(&g, 1));
    let counter = state.departments.get("counter").unwrap().caller(None);
    let uses = MAX_ACCESS_REPORT + 7;
    let events: Vec<_> = (0..uses)
        .flat_map(|i| {
            let mut a = counter.event("核验", basedata_store::Action::Verify, Some(key));
            a.outcome = format!("match {i}");
            [a, counter.event("核验", basedata_store::Action::Verify, Some(other))]
        })
        .collect();
    state.queries.record(events, basedata_store::WriteBatch::new()).await.unwrap();
    let first = state.queries.access_report(&counter, "告知", key, None, None).await.unwrap();
    assert_eq!((first.entries.len(), first.more), (MAX_ACCESS_REPORT, true));
    let last = first.entries.last().unwrap().seq;
    let second = state.queries.access_report(&counter, "告知", key, first.next.clone(), None).await.unwrap();
    assert!(second.next.is_none());
    assert!(!second.more);
    // The rest of the uses, then the first page's own access report entry.
    assert_eq!(second.entries.len(), uses - MAX_ACCESS_REPORT + 1);
    assert_eq!(second.entries[0].outcome, format!("match {MAX_ACCESS_REPORT}"));
    assert!(second.entries.iter().all(|e| e.seq > last));
}

#[tokio::test]
async fn a_strict_department_states_its_purpose_codes_only() {
    let app = router(state_with(&[DepartmentConfig {
        id: "strict".into(),
        roles: vec![Role::Consumer],
        token: Some(TOKEN.into()),
        purposes: Some(vec!["social_insurance".into()]),
        ..Default::default()
    }]));
    let send = |purpose: &'static str| {
        let app = app.clone();
        async move {
            let req = HttpRequest::get("/v1/persons/11010519491231002X")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("x-purpose", purpose)
                .body(Body::empty())
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let s = resp.status();
            (s, serde_json::from_slice::<Value>(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap())
        }
    };
    let (s, b) = send("tax_administration; x").await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("purpose_not_allowed")), "{b}");
    assert_eq!(b["error"]["details"]["purpose_code"], "tax_administration");
    assert_eq!(b["error"]["details"]["reason"], "not_allowed");
    let (s, b) = send("办理社保").await;
    assert_eq!((s, b["error"]["details"]["reason"].as_str()), (StatusCode::FORBIDDEN, Some("unknown")), "{b}");
    // Admitted: the lookup itself answers (nothing stored yet).
    let (s, b) = send("social_insurance; 业务 42").await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{b}");
}

/// On a single node the audit trail pages by `next` as it always did, and
/// by `cursor` too; entries name no node; the check lists the one chain.
#[tokio::test]
async fn a_single_node_audit_trail_pages_by_next_or_cursor() {
    let state = auditor_state();
    let auditor = state.departments.get("audit").unwrap().caller(None);
    let events: Vec<_> = (0..5).map(|_| auditor.event("核验", basedata_store::Action::Lookup, None)).collect();
    state.queries.record(events, basedata_store::WriteBatch::new()).await.unwrap();
    let page = |q: String| {
        let state = state.clone();
        async move {
            let resp = router(state).oneshot(get(&format!("/v1/audit?limit=2{q}"), Some("test-auditor-token-01"))).await.unwrap();
            let s = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (s, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (s, first) = page(String::new()).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let seqs = |v: &Value| v["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(seqs(&first), vec![1, 2]);
    assert!(first["entries"][0]["node"].is_null());
    assert_eq!(first["next"], 2);
    let (_, by_next) = page("&after=2".into()).await;
    let (_, by_cursor) = page(format!("&after={}", first["cursor"].as_str().unwrap())).await;
    assert_eq!((seqs(&by_next), seqs(&by_cursor)), (vec![3, 4], vec![3, 4]));
    let (s, bad) = page("&after=soon".into()).await;
    assert_eq!((s, bad["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_value")));
    // A limit out of range is refused, not quietly changed: an auditor
    // asking for 50,000 entries must not take 10,000 for the whole answer.
    for (limit, status) in [("0", StatusCode::BAD_REQUEST), ("10001", StatusCode::BAD_REQUEST), ("10000", StatusCode::OK)] {
        let resp = router(state.clone()).oneshot(get(&format!("/v1/audit?limit={limit}"), Some("test-auditor-token-01"))).await.unwrap();
        assert_eq!(resp.status(), status, "limit {limit}");
        let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        match status {
            StatusCode::OK => assert_eq!(seqs(&body).len(), 5, "{body}"),
            _ => assert_eq!(body["error"]["message"], "limit is 1 to 10000", "{body}"),
        }
    }
    let resp = router(state.clone()).oneshot(get("/v1/audit/verify", Some("test-auditor-token-01"))).await.unwrap();
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!((body["ok"].as_bool(), body["entries"].as_u64()), (Some(true), Some(5)), "{body}");
    assert_eq!(body["chains"].as_array().unwrap().len(), 1);
    assert!(body["chains"][0]["node"].is_null() && body["chains"][0]["ok"] == true);
}

/// A state with the one department `department` over an in-memory store
/// whose every write takes 300 ms.
fn slow_state(department: DepartmentConfig, settings: Settings) -> AppState {
    let engine = Arc::new(MemEngine::new());
    let clock = Arc::new(ManualClock::new(1_763_800_000_000_000));
    let store = Store::open(engine.clone(), &Secret::from_bytes([1; 32]), Arc::new(Catalog::builtin()), clock).unwrap();
    let state = AppState::build(Arc::new(store), Departments::from_config(&[department]).unwrap(), settings).unwrap();
    engine.delay_writes(std::time::Duration::from_millis(300));
    state
}

/// A change given up at the time limit is still made once its write
/// lands, and its `503` says so; a read's says only that it was given up.
#[tokio::test]
async fn a_change_past_the_time_limit_is_told_it_may_still_be_made_and_is() {
    let admin = "test-admin-token-00001";
    let settings = Settings { request_timeout: std::time::Duration::from_millis(20), ..Settings::default() };
    // The switch's audited commit outlasts the limit.
    let state = slow_state(dept("admin", "管理", vec![Role::Admin], admin, None), settings);
    let put = HttpRequest::put("/v1/policy")
        .header("authorization", format!("Bearer {admin}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"grant_reply_days": 9}"#))
        .unwrap();
    let resp = router(state.clone()).oneshot(put).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("may still be made"), "{body}");
    for _ in 0..100 {
        if state.queries.policy().0.grant_reply_days == 9 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state.queries.policy().0.grant_reply_days, 9, "the switch was made after its answer was given up");
    assert!(state.queries.policy().1.is_some_and(|r| r.set_by == "admin"));
}

/// A full disk is `503 unavailable` with its reason, for a provider's
/// updates and a counter's verification alike (not a `500`: nothing is
/// wrong with the request or the server), and passes once space is freed.
#[tokio::test]
async fn a_full_disk_is_unavailable_not_an_internal_error_and_passes() {
    let (provider, counter) = ("test-gongan-token-0001", "test-counter-token-001");
    let engine = Arc::new(MemEngine::new());
    let clock = Arc::new(ManualClock::new(1_763_800_000_000_000));
    let store = Store::open(engine.clone(), &Secret::from_bytes([1; 32]), Arc::new(Catalog::builtin()), clock).unwrap();
    let departments = Departments::from_config(&[
        dept("gongan", "公安", vec![Role::Provider], provider, None),
        dept("counter", "窗口", vec![Role::Consumer], counter, None),
    ])
    .unwrap();
    let state = AppState::build(Arc::new(store), departments, Settings::default()).unwrap();
    let g = basedata_gen::GenConfig { persons: 1, entities: 0, seed: 5 };
    let key = basedata_gen::person_key(&g, 0);
    let line = serde_json::json!({"key": key.as_str(), "version": 1, "fields": basedata_gen::person_hukou(&g, 0)}).to_string();
    let update = || {
        HttpRequest::post("/v1/datasets/hukou/updates")
            .header("authorization", format!("Bearer {provider}"))
            .header("content-type", "application/x-ndjson")
            .body(Body::from(line.clone()))
            .unwrap()
    };
    let verify = || {
        HttpRequest::post(format!("/v1/persons/{}/verify", key.as_str()))
            .header("authorization", format!("Bearer {counter}"))
            .header("x-purpose", "test")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"dataset": "hukou", "fields": {"name": "x"}}"#))
            .unwrap()
    };
    let send = |req: HttpRequest<Body>| {
        let state = state.clone();
        async move {
            let resp = router(state).oneshot(req).await.unwrap();
            let status = resp.status();
            let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
            (status, body)
        }
    };
    engine.fail_writes(Some("IO error: No space left on device: While appending to file: /data/000004.log: No space left on device"));
    for (what, req) in [("update", update()), ("verification", verify())] {
        let (status, body) = send(req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{what}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("disk holding the store is full"), "{what}: {body}");
    }
    engine.fail_writes(None);
    let (status, body) = send(update()).await;
    assert_eq!((status, &body["applied"]), (StatusCode::OK, &serde_json::json!(1)), "{body}");
    let (status, body) = send(verify()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A provider that goes away while its updates are written still has its
/// rejected lines kept for the stewards, with the updates.
#[tokio::test]
async fn rejected_lines_are_kept_when_the_provider_leaves_before_the_answer() {
    let token = "test-gongan-token-0001";
    // The request is given up while its updates are written, as when the
    // client goes away.
    let state = slow_state(dept("gongan", "公安", vec![Role::Provider], token, None), Settings::default());
    let g = basedata_gen::GenConfig { persons: 1, entities: 0, seed: 5 };
    let good = serde_json::json!({"key": basedata_gen::person_key(&g, 0).as_str(), "version": 1, "fields": basedata_gen::person_hukou(&g, 0)});
    let body = format!("{good}\n{{\"key\":\"1\",\"version\":1}}\n");
    let post = HttpRequest::post("/v1/datasets/hukou/updates")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(body))
        .unwrap();
    let given_up = tokio::time::timeout(std::time::Duration::from_millis(50), router(state.clone()).oneshot(post)).await;
    assert!(given_up.is_err(), "answered before its write was durable");
    let gongan = state.departments.get("gongan").unwrap().caller(None);
    let mut kept = Vec::new();
    for _ in 0..100 {
        kept = state.queries.rejected_lines(&gongan, "hukou").unwrap();
        if !kept.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(kept.iter().map(|l| (l.line, l.code.as_str())).collect::<Vec<_>>(), vec![(2, "invalid_key")]);
    let key = basedata_store::SubjectKey::Person(basedata_gen::person_key(&g, 0));
    assert!(state.store.get(&key, "hukou", None).unwrap().is_some(), "and the valid line was applied");
}

/// A request without a valid token is `unauthenticated`, whatever else is
/// wrong with it (here an operator header that is not UTF-8).
#[tokio::test]
async fn a_missing_token_is_told_before_a_malformed_operator() {
    let req = HttpRequest::get("/v1/catalog").header("x-operator", "%FF%FE").body(Body::empty()).unwrap();
    let (s, b, _) = call(req).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")), "{b}");
    let req = HttpRequest::get("/v1/catalog").header("authorization", format!("Bearer {TOKEN}")).header("x-operator", "%FF%FE").body(Body::empty()).unwrap();
    let (s, b, _) = call(req).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_value")), "{b}");
}

/// A key in the path that is not UTF-8 once decoded is a malformed key,
/// refused as every other one is, not a generic bad value.
#[tokio::test]
async fn a_path_key_that_is_not_utf8_is_an_invalid_key() {
    for path in ["/v1/keys/person/%FF", "/v1/keys/entity/%C0%AF"] {
        let (s, b, _) = call(get(path, Some(TOKEN))).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        assert_eq!(b["valid"], false, "{path}: {b}");
        assert!(b["reason"].is_string(), "{path}: {b}");
    }
    let req = HttpRequest::get("/v1/persons/%FF").header("authorization", format!("Bearer {TOKEN}")).header("x-purpose", "p").body(Body::empty()).unwrap();
    let (s, b, _) = call(req).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_key")), "{b}");
    assert!(b["error"]["details"]["reason"].is_string(), "{b}");
}

/// A body that breaks off while it is read is `invalid_body`.
#[tokio::test]
async fn a_body_that_cannot_be_read_is_invalid_body() {
    let broken = futures_util::stream::iter([
        Ok(bytes::Bytes::from_static(b"{\"dataset\":")),
        Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the client went away")),
    ]);
    let req = HttpRequest::post("/v1/persons/11010519491231002X/verify")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-purpose", "p")
        .header("content-type", "application/json")
        .body(Body::from_stream(broken))
        .unwrap();
    let (s, b, _) = call(req).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")), "{b}");
}

/// An update body declared over the server's limit is refused before it
/// is read, as a job's is; one declared within it is read as usual.
#[tokio::test]
async fn updates_declared_over_the_limit_are_refused_before_their_body_is_read() {
    let token = "test-gongan-token-0001";
    let state = state_with(&[dept("gongan", "公安", vec![Role::Provider], token, None)]);
    let polled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = polled.clone();
    let body = futures_util::stream::poll_fn(move |_| {
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}\n"))))
    });
    let post = |length: u64, body: Body| {
        HttpRequest::post("/v1/datasets/hukou/updates")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/x-ndjson")
            .header("content-length", length.to_string())
            .header("expect", "100-continue")
            .body(body)
            .unwrap()
    };
    let over = (1u64 << 20) + 1;
    let resp = router(state.clone()).oneshot(post(over, Body::from_stream(body))).await.unwrap();
    let status = resp.status();
    let b: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!((status, b["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{b}");
    assert!(!polled.load(std::sync::atomic::Ordering::SeqCst), "the body was read");
    // Within the limit, the body is read and its lines judged.
    let line = b"{\"key\":\"1\",\"version\":1}\n";
    let resp = router(state).oneshot(post(line.len() as u64, Body::from(&line[..]))).await.unwrap();
    let status = resp.status();
    let b: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!((status, b["rejected_total"].as_u64()), (StatusCode::OK, Some(1)), "{b}");
}

/// A job over the department's size is refused before its body is read
/// (reading it is what tells a client waiting on `Expect: 100-continue`
/// to send it).
#[tokio::test]
async fn a_job_over_its_size_is_refused_before_its_body_is_read() {
    let polled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = polled.clone();
    let body = futures_util::stream::poll_fn(move |_| {
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}\n"))))
    });
    let req = HttpRequest::post("/v1/jobs")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("x-purpose", "p")
        .header("content-type", "application/x-ndjson")
        .header("content-length", "10000000000")
        .header("expect", "100-continue")
        .body(Body::from_stream(body))
        .unwrap();
    let (s, b, _) = call(req).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{b}");
    assert!(!polled.load(std::sync::atomic::Ordering::SeqCst), "the body was read");
}

/// A body that records whether it was read: endless `{}` lines.
fn watched_body() -> (Body, Arc<std::sync::atomic::AtomicBool>) {
    let polled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = polled.clone();
    let body = futures_util::stream::poll_fn(move |_| {
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}\n"))))
    });
    (Body::from_stream(body), polled)
}

fn peer() -> crate::tls::TlsPeer {
    crate::tls::TlsPeer { addr: "127.0.0.1:40000".parse().unwrap(), subject: None, tls: false }
}

/// `req` answered by the router, or by the fast route in front of it: the
/// status and the JSON body.
async fn answered(state: &AppState, edge: &Edge, req: HttpRequest<Body>, via_edge: bool) -> (StatusCode, Value) {
    let resp = if via_edge { edge.call(req, &peer()).await } else { router(state.clone()).oneshot(req).await.unwrap() };
    let status = resp.status();
    (status, serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap())
}

/// Every endpoint that reads its body whole refuses one declared over
/// its limit at once, before reading any of it (as updates and jobs
/// do): on the router, and on the fast route of verifications.
#[tokio::test]
async fn bodies_declared_over_the_limit_are_refused_before_they_are_read_everywhere() {
    let state = test_state();
    let edge = Edge::new(router(state.clone()), &state);
    let paths = [
        ("POST", "/v1/persons/11010519491231002X/verify"),
        ("POST", "/v1/entities/91350100M000100Y43/verify"),
        ("POST", "/v1/grants"),
        ("POST", "/v1/disputes"),
    ];
    for (method, path) in paths {
        for via_edge in [false, true] {
            let (body, polled) = watched_body();
            let req = HttpRequest::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("x-purpose", "p")
                .header("content-type", "application/json")
                .header("content-length", "314572800")
                .body(body)
                .unwrap();
            let (status, b) = answered(&state, &edge, req, via_edge).await;
            assert_eq!((status, b["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{path} {via_edge}: {b}");
            assert!(!polled.load(std::sync::atomic::Ordering::SeqCst), "{path} {via_edge}: the body was read");
        }
    }
}

/// A request body in a content coding is refused whole, before anything
/// of it is read or applied: updates (whether or not the body is really
/// compressed), verifications (router and fast route), batches and jobs.
/// `identity` is no coding.
#[tokio::test]
async fn bodies_in_a_content_coding_are_refused_before_anything_is_applied() {
    let provider = "test-gongan-token-0001";
    let state = state_with(&[
        dept("gongan", "公安", vec![Role::Provider], provider, None),
        dept("counter", "窗口", vec![Role::Consumer], TOKEN, None),
    ]);
    let edge = Edge::new(router(state.clone()), &state);
    let g = basedata_gen::GenConfig { persons: 1, entities: 0, seed: 3 };
    let line = serde_json::json!({"key": basedata_gen::person_key(&g, 0).as_str(), "version": 1, "op": "upsert",
        "fields": basedata_gen::person_hukou(&g, 0)})
    .to_string();
    let post = |coding: Option<&str>, body: Vec<u8>| {
        let mut b = HttpRequest::post("/v1/datasets/hukou/updates")
            .header("authorization", format!("Bearer {provider}"))
            .header("content-type", "application/x-ndjson");
        if let Some(c) = coding {
            b = b.header("content-encoding", c);
        }
        b.body(Body::from(body)).unwrap()
    };
    let gzip = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03, 0xab, 0xae, 0x05, 0];
    for (coding, body) in [("gzip", gzip), ("br", line.clone().into_bytes()), ("identity, gzip", line.clone().into_bytes())] {
        for via_edge in [false, true] {
            let req = post(Some(coding), body.clone());
            let (status, b) = answered(&state, &edge, req, via_edge).await;
            assert_eq!((status, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")), "{coding}: {b}");
            let message = b["error"]["message"].as_str().unwrap();
            assert!(message.contains("gzip") || message.contains("br"), "{message}");
            assert!(message.contains("uncompressed"), "{message}");
        }
    }
    // Nothing of those was applied: the same line, plain, is new.
    let resp = router(state.clone()).oneshot(post(Some("identity"), line.into_bytes())).await.unwrap();
    let b: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!((b["applied"].as_u64(), b["stale"].as_u64()), (Some(1), Some(0)), "{b}");

    for path in ["/v1/persons/11010519491231002X/verify", "/v1/verify/batch", "/v1/jobs"] {
        for via_edge in [false, true] {
            let (body, polled) = watched_body();
            let req = HttpRequest::post(path)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("x-purpose", "p")
                .header("content-encoding", "gzip")
                .body(body)
                .unwrap();
            let (status, b) = answered(&state, &edge, req, via_edge).await;
            assert_eq!((status, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")), "{path}: {b}");
            assert!(!polled.load(std::sync::atomic::Ordering::SeqCst), "{path}: the body was read");
        }
    }
}
