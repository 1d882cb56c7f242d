//! End-to-end governance workflows with the release binary: grants with
//! their deadline rule, disputes, the change feed and the reports. Time
//! moves by restarting the server with a shifted clock
//! (`clock_offset_seconds`), so no test waits for days.

use basedata_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const P1: &str = "11010519491231002X";
const P2: &str = "440305198001010013";
const DAY: i64 = 86_400;

fn hukou(key: &str, version: u64, name: &str) -> Value {
    let (born, sex) = encoded(key);
    json!({"key": key, "version": version, "fields": {"name": name, "gender": sex, "birth_date": born, "status": "normal", "photo": "aGVsbG8="}})
}

fn push(s: &Server, token: &str, ds: &str, lines: &[Value]) -> Resp {
    let r = s.req("POST", &format!("/v1/datasets/{ds}/updates")).token(token).ndjson(lines);
    assert_eq!(r.status, 200, "{}", r.text);
    r
}

fn photo_visible(s: &Server) -> bool {
    let r = s.req("GET", &format!("/v1/persons/{P1}?datasets=hukou")).token(tokens::COUNTER).purpose("核验照片").get();
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["datasets"]["hukou"]["fields"].get("photo").is_some()
}

fn config(offset_days: i64, extra: &str) -> String {
    format!("clock_offset_seconds = {}\n{extra}\n{}", offset_days * DAY, standard_config())
}

#[test]
fn grants_apply_decide_revoke() {
    let s = Server::start(&standard_config());
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三")]);
    assert!(!photo_visible(&s));

    let apply = |body: Value| s.req("POST", "/v1/grants").token(tokens::COUNTER).json(&body);
    for (body, status, code) in [
        (json!({"dataset": "hukou", "fields": ["name"], "purpose": "p", "legal_basis": "b"}), 400, "invalid_value"),
        (json!({"dataset": "death", "fields": ["cause_of_death"], "purpose": "p", "legal_basis": "b"}), 400, "invalid_value"),
        (json!({"dataset": "hukou", "fields": ["nickname"], "purpose": "p", "legal_basis": "b"}), 400, "unknown_field"),
        (json!({"dataset": "nope", "fields": ["photo"], "purpose": "p", "legal_basis": "b"}), 404, "unknown_dataset"),
        (json!({"dataset": "hukou", "fields": ["photo"], "purpose": " ", "legal_basis": "b"}), 400, "invalid_value"),
        (json!({"dataset": "hukou", "fields": [], "purpose": "p", "legal_basis": "b"}), 400, "invalid_value"),
        (json!({"dataset": "hukou"}), 400, "invalid_body"),
        // Text that goes on record is refused, never cut or cleaned, when
        // it holds what could forge or hide a line, or is too long.
        (json!({"dataset": "hukou", "fields": ["photo"], "purpose": "比对\u{202E}照片", "legal_basis": "b"}), 400, "invalid_value"),
        (json!({"dataset": "hukou", "fields": ["photo"], "purpose": "p", "legal_basis": "第一条\n伪造的一行"}), 400, "invalid_value"),
        (json!({"dataset": "hukou", "fields": ["photo"], "purpose": "p".repeat(501), "legal_basis": "b"}), 400, "invalid_value"),
    ] {
        let r = apply(body.clone());
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.text);
    }
    let r = apply(json!({"dataset": "hukou", "fields": ["photo"], "purpose": "社保待遇资格认证比对照片", "legal_basis": "《社会保险法》第七十二条"}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["state"], "pending");
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["due"].as_str().unwrap().len(), 10);

    // Only the provider decides; a refusal needs reasons.
    let decide = |token: &str, body: Value| s.req("POST", &format!("/v1/grants/{id}/decision")).token(token).json(&body);
    assert_eq!(decide(tokens::COUNTER, json!({"approve": true})).status, 403);
    assert_eq!(decide(tokens::SHICHANG, json!({"approve": true})).status, 404, "others do not see the grant");
    let r = decide(tokens::GONGAN, json!({"approve": false}));
    assert_eq!((r.status, r.code()), (400, "invalid_value"));
    for reason in ["x".repeat(2001), "理由\u{0}".to_owned()] {
        let r = decide(tokens::GONGAN, json!({"approve": false, "reason": reason}));
        assert_eq!((r.status, r.code()), (400, "invalid_value"), "{}", r.text);
    }
    let r = s.req("POST", &format!("/v1/grants/{id}/decision")).token(tokens::GONGAN).header("X-Operator", "steward-07")
        .json(&json!({"approve": true, "reason": "依法履职需要"}));
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("approved")), "{}", r.text);
    assert_eq!((r.json["decided_by"].as_str(), r.json["decided_operator"].as_str()), (Some("gongan"), Some("steward-07")));
    assert_eq!(r.json["decided_operator_source"], "declared");
    assert!(photo_visible(&s));
    // A verification of the photo, and a batch line claiming it, rely on it too.
    let r = s.req("POST", &format!("/v1/persons/{P1}/verify")).token(tokens::COUNTER).purpose("核验照片")
        .json(&json!({"dataset": "hukou", "fields": {"photo": "aGVsbG8=", "name": "张三"}}));
    assert_eq!((r.status, r.json["result"].as_str()), (200, Some("match")), "{}", r.text);
    let line = json!({"ref": "r1", "subject": "person", "key": P1, "dataset": "hukou", "fields": {"photo": "aGVsbG8="}});
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("核验照片").ndjson(&[line]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("\"result\":\"match\""), "{}", r.text);
    let r = s.req("GET", "/v1/audit?department=shebao-counter").token(tokens::AUDITOR).get();
    for action in ["verify", "batch_verify"] {
        let e = r.json["entries"].as_array().unwrap().iter().filter(|e| e["action"] == action).last().cloned().unwrap();
        let grants: Vec<&str> = e["approvals"].as_array().unwrap().iter().filter_map(|a| a["grant"].as_str()).collect();
        assert_eq!(grants, [id.as_str()], "{e}");
    }
    let r = decide(tokens::GONGAN, json!({"approve": false, "reason": "x"}));
    assert_eq!((r.status, r.code()), (409, "conflict"));

    // Listing by role.
    let count = |token: &str, q: &str| s.req("GET", &format!("/v1/grants{q}")).token(token).get().json["grants"].as_array().map(|a| a.len());
    assert_eq!(count(tokens::COUNTER, ""), Some(1));
    assert_eq!(count(tokens::GONGAN, "?state=approved"), Some(1));
    assert_eq!(count(tokens::GONGAN, "?state=pending"), Some(0));
    assert_eq!(count(tokens::SHICHANG, ""), Some(0));
    assert_eq!(count(tokens::ADMIN, ""), Some(1));
    assert_eq!(s.req("GET", "/v1/grants?state=bogus").token(tokens::ADMIN).get().status, 400);

    // Revocation stops counting at once.
    let r = s.req("POST", &format!("/v1/grants/{id}/revoke")).token(tokens::COUNTER).json(&json!({"reason": "x"}));
    assert_eq!(r.status, 403);
    let r = s.req("POST", &format!("/v1/grants/{id}/revoke")).token(tokens::ADMIN).json(&json!({}));
    assert_eq!((r.status, r.code()), (400, "invalid_value"));
    let r = s.req("POST", &format!("/v1/grants/{id}/revoke")).token(tokens::GONGAN).json(&json!({"reason": "用途已结束"}));
    assert_eq!((r.status, r.json["state"].as_str()), (200, Some("revoked")), "{}", r.text);
    assert!(!photo_visible(&s));

    // Every state change is audited.
    let r = s.req("GET", "/v1/audit?department=gongan").token(tokens::AUDITOR).get();
    let outcomes: Vec<String> = r.json["entries"].as_array().unwrap().iter()
        .filter(|e| e["action"] == "grant").map(|e| e["outcome"].as_str().unwrap().to_owned()).collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(outcomes[0].starts_with("approved") && outcomes[1].starts_with("revoked"));

    // Each lookup names the approval it disclosed the photo under, as
    // recorded when it was decided: none before the decision or after the
    // revocation, and the revocation does not take it from the earlier one.
    let r = s.req("GET", "/v1/audit?department=shebao-counter").token(tokens::AUDITOR).get();
    let lookups: Vec<&Value> = r.json["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "lookup").collect();
    let approvals: Vec<usize> = lookups.iter().map(|e| e["approvals"].as_array().unwrap().len()).collect();
    assert_eq!(approvals, [0, 1, 0], "{}", r.text);
    let a = &lookups[1]["approvals"][0];
    assert_eq!(a["grant"], id.as_str());
    assert_eq!((a["dataset"].as_str(), a["state"].as_str()), (Some("hukou"), Some("approved")));
    assert_eq!((a["approved_by"].as_str(), a["approver"].as_str()), (Some("gongan"), Some("steward-07")), "{a}");
    assert_eq!(a["approver_source"], "declared", "X-Operator is what the program declared: {a}");
    assert!(lookups[1]["fields"].as_array().unwrap().iter().any(|f| f == "hukou.photo"), "{}", lookups[1]);
    // The grant's own decision is no use of subject data: no approvals.
    let r = s.req("GET", "/v1/audit?department=gongan").token(tokens::AUDITOR).get();
    assert!(r.json["entries"].as_array().unwrap().iter().all(|e| e["approvals"].as_array().is_some_and(|a| a.is_empty())), "{}", r.text);
}

#[test]
fn unanswered_grants_are_deemed_approved_unless_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &config(0, ""), &[]);
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三")]);
    let r = s.req("POST", "/v1/grants").token(tokens::COUNTER)
        .json(&json!({"dataset": "hukou", "fields": ["photo"], "purpose": "p", "legal_basis": "b"}));
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert!(!photo_visible(&s));
    s.terminate();

    // Three weeks later, with the rule switched off: still pending.
    let mut s = Server::start_in(dir.path(), &config(21, "[policy]\ndeemed_approval = false"), &[]);
    let g = s.req("GET", &format!("/v1/grants/{id}")).token(tokens::COUNTER).get();
    assert_eq!(g.json["state"], "pending", "{}", g.text);
    assert!(!photo_visible(&s));
    s.terminate();

    // With the rule on (the default): deemed approved, and the photo shows.
    let s = Server::start_in(dir.path(), &config(21, ""), &[]);
    let g = s.req("GET", &format!("/v1/grants/{id}")).token(tokens::COUNTER).get();
    assert_eq!(g.json["state"], "deemed_approved", "{}", g.text);
    assert!(photo_visible(&s));
    // That lookup was made under the deemed approval, which no one decided.
    let r = s.req("GET", "/v1/audit?department=shebao-counter").token(tokens::AUDITOR).get();
    let last = r.json["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "lookup").last().cloned().unwrap();
    let a = &last["approvals"][0];
    assert_eq!((a["grant"].as_str(), a["state"].as_str()), (Some(id.as_str()), Some("deemed_approved")), "{last}");
    assert!(a["approved_by"].is_null() && a["approver"].is_null(), "{a}");
    let r = s.req("POST", &format!("/v1/grants/{id}/decision")).token(tokens::GONGAN).json(&json!({"approve": true}));
    assert_eq!((r.status, r.code()), (409, "conflict"));
    // The provider can still end it.
    let r = s.req("POST", &format!("/v1/grants/{id}/revoke")).token(tokens::GONGAN).json(&json!({"reason": "核查后撤销"}));
    assert_eq!(r.json["state"], "revoked");
    assert!(!photo_visible(&s));
}

#[test]
fn administrators_switch_the_policy_and_the_switch_outlasts_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &config(0, ""), &[]);
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三")]);
    let p = s.req("GET", "/v1/policy").token(tokens::COUNTER).get();
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!((p.json["source"].as_str(), p.json["deemed_approval"].as_bool(), p.json["grant_reply_days"].as_u64()), (Some("config"), Some(true), Some(5)));
    let put = |token: &str, body: Value| s.req("PUT", "/v1/policy").token(token).json(&body);
    for (token, body, status, code) in [
        (tokens::GONGAN, json!({"deemed_approval": false}), 403, "forbidden"),
        (tokens::ADMIN, json!({"grant_reply_days": 0}), 400, "invalid_value"),
        (tokens::ADMIN, json!({"dispute_days": 61}), 400, "invalid_value"),
        (tokens::ADMIN, json!({"deemed": false}), 400, "invalid_body"),
        (tokens::ADMIN, json!({"deemed_approval": "no"}), 400, "invalid_body"),
    ] {
        let r = put(token, body.clone());
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.text);
    }
    let r = put(tokens::ADMIN, json!({"deemed_approval": false, "grant_reply_days": 3}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["source"].as_str(), r.json["set_by"].as_str(), r.json["deemed_approval"].as_bool()), (Some("api"), Some("admin"), Some(false)));
    assert_eq!((r.json["grant_reply_days"].as_u64(), r.json["dispute_days"].as_u64()), (Some(3), Some(5)), "left out, left as it was");
    // A new application's deadline follows the switch: 3 working days.
    let g = s.req("POST", "/v1/grants").token(tokens::COUNTER)
        .json(&json!({"dataset": "hukou", "fields": ["photo"], "purpose": "p", "legal_basis": "b"}));
    assert_eq!(g.status, 201, "{}", g.text);
    let id = g.json["id"].as_str().unwrap().to_owned();
    let audit = s.req("GET", "/v1/audit?department=admin").token(tokens::AUDITOR).get();
    let switched: Vec<&Value> = audit.json["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "policy").collect();
    assert_eq!(switched.len(), 1, "{}", audit.text);
    assert!(switched[0]["outcome"].as_str().unwrap().contains("deemed_approval=false"), "{}", audit.text);
    s.terminate();

    // Three weeks later, restarted with the configuration's rule on: the
    // switch stands, so the grant is still pending.
    let mut s = Server::start_in(dir.path(), &config(21, "[policy]\ndeemed_approval = true"), &[]);
    let g = s.req("GET", &format!("/v1/grants/{id}")).token(tokens::COUNTER).get();
    assert_eq!(g.json["state"], "pending", "{}", g.text);
    assert!(!photo_visible(&s));
    // Switched on again: deemed approved at once, and the photo shows.
    let r = s.req("PUT", "/v1/policy").token(tokens::ADMIN).json(&json!({"deemed_approval": true}));
    assert_eq!((r.status, r.json["deemed_approval"].as_bool()), (200, Some(true)), "{}", r.text);
    let g = s.req("GET", &format!("/v1/grants/{id}")).token(tokens::COUNTER).get();
    assert_eq!(g.json["state"], "deemed_approved", "{}", g.text);
    assert!(photo_visible(&s));
    s.terminate();
}

#[test]
fn disputes_are_checked_and_corrected_by_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &config(0, ""), &[]);
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三"), hukou(P2, 1, "李四")]);
    let file = |key: &str, field: &str| {
        s.req("POST", "/v1/disputes").token(tokens::COUNTER)
            .json(&json!({"subject": "person", "key": key, "dataset": "hukou", "field": field, "claimed": "张叁", "note": "群众反映姓名有误"}))
    };
    let r = file(P1, "name");
    assert_eq!((r.status, r.json["state"].as_str()), (201, Some("open")), "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["key"], P1);
    assert_eq!(file("110105194912310021", "name").code(), "invalid_key");
    assert_eq!(file(P1, "nickname").code(), "unknown_field");
    let other = file(P2, "name").json["id"].as_str().unwrap().to_owned();

    let resolve = |token: &str, id: &str, body: Value| s.req("POST", &format!("/v1/disputes/{id}/resolution")).token(token).json(&body);
    assert_eq!(resolve(tokens::COUNTER, &id, json!({"outcome": "confirmed"})).status, 403);
    assert_eq!(resolve(tokens::GONGAN, &id, json!({"outcome": "maybe"})).code(), "invalid_value");
    let r = resolve(tokens::GONGAN, &id, json!({"outcome": "corrected", "note": "已更正"}));
    assert_eq!((r.status, r.code()), (409, "conflict"), "a correction needs an update first");
    // An update that leaves the disputed value as it was corrects nothing.
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 2, "张三")]);
    let r = resolve(tokens::GONGAN, &id, json!({"outcome": "corrected", "note": "已更正"}));
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);
    assert!(r.json["error"]["message"].as_str().unwrap().contains("still holds the value disputed"), "{}", r.text);
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 3, "张叁")]);
    let r = resolve(tokens::GONGAN, &id, json!({"outcome": "corrected", "note": "已更正"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "resolved");
    assert_eq!(r.json["resolution"]["outcome"], "corrected");
    assert_eq!(resolve(tokens::GONGAN, &id, json!({"outcome": "confirmed"})).code(), "conflict");

    let list = |s: &Server, token: &str, q: &str| -> Vec<String> {
        let r = s.req("GET", &format!("/v1/disputes{q}")).token(token).get();
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["disputes"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(list(&s, tokens::COUNTER, "?state=resolved"), vec![id.clone()]);
    assert_eq!(list(&s, tokens::GONGAN, "?state=open"), vec![other.clone()]);
    assert!(list(&s, tokens::GONGAN, "?state=overdue").is_empty());
    assert!(list(&s, tokens::SHICHANG, "").is_empty());
    s.terminate();

    // Two weeks on, the unanswered one is overdue.
    let s = Server::start_in(dir.path(), &config(14, ""), &[]);
    assert_eq!(list(&s, tokens::ADMIN, "?state=overdue"), vec![other]);
}

#[test]
fn change_feed_filters_resumes_and_long_polls() {
    let s = Server::start(&standard_config());
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三"), hukou(P2, 1, "李四")]);
    let death = json!({"key": P1, "version": 1, "fields": {"name": "张三", "death_date": "2020-02-02", "cause_of_death": "心力衰竭"}});
    push(&s, tokens::WEIJIAN, "death", &[death]);
    push(&s, tokens::GONGAN, "hukou", &[json!({"key": P2, "version": 2, "op": "delete"})]);

    let feed = |q: &str| s.req("GET", &format!("/v1/changes{q}")).token(tokens::COUNTER).purpose("订阅变更").get();
    // Without a subscription the feed delivers nothing of a dataset, and
    // moves on past it.
    let r = feed("?after=0");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["changes"].as_array().unwrap().is_empty(), "{}", r.text);
    assert_eq!(r.json["next"].as_u64(), Some(4));
    // A subscription is a grant the provider decides on; pending, it opens nothing.
    let pending = s.req("POST", "/v1/grants").token(tokens::COUNTER)
        .json(&json!({"dataset": "hukou", "kind": "subscription", "purpose": "订阅变更", "legal_basis": "b"}));
    assert_eq!((pending.status, pending.json["kind"].as_str()), (201, Some("subscription")), "{}", pending.text);
    assert!(feed("?after=0").json["changes"].as_array().unwrap().is_empty());
    let with_fields = s.req("POST", "/v1/grants").token(tokens::COUNTER)
        .json(&json!({"dataset": "hukou", "kind": "subscription", "fields": ["photo"], "purpose": "p", "legal_basis": "b"}));
    assert_eq!(with_fields.code(), "invalid_value", "{}", with_fields.text);
    let id = pending.json["id"].as_str().unwrap();
    let r = s.req("POST", &format!("/v1/grants/{id}/decision")).token(tokens::GONGAN).json(&json!({"approve": true}));
    assert_eq!(r.json["state"], "approved", "{}", r.text);
    // Only hukou so far: the death record stays out.
    let r = feed("?after=0");
    let datasets: Vec<&str> = r.json["changes"].as_array().unwrap().iter().filter_map(|c| c["dataset"].as_str()).collect();
    assert_eq!(datasets, ["hukou", "hukou", "hukou"], "{}", r.text);
    subscribe(&s, tokens::COUNTER, tokens::WEIJIAN, "death", "订阅变更");
    // Subscriptions are listed on their own; a made-up kind is refused.
    let list = |q: &str| s.req("GET", &format!("/v1/grants{q}")).token(tokens::COUNTER).get();
    let subs = list("?kind=subscription");
    let datasets: Vec<&str> = subs.json["grants"].as_array().unwrap().iter().filter_map(|g| g["dataset"].as_str()).collect();
    assert_eq!(datasets, ["hukou", "death"], "{}", subs.text);
    assert!(list("?kind=fields").json["grants"].as_array().unwrap().iter().all(|g| g["kind"] == "fields"));
    assert_eq!(list("?kind=both").code(), "invalid_value");
    let r = feed("?after=0&limit=2");
    assert_eq!(r.status, 200, "{}", r.text);
    let c = r.json["changes"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!((c[0]["seq"].as_u64(), c[1]["seq"].as_u64()), (Some(1), Some(2)));
    assert!(c[0]["fields"].get("photo").is_none(), "conditional field leaked: {}", r.text);
    assert_eq!(c[0]["fields"]["name"], "张三");
    let next = r.json["next"].as_u64().unwrap();
    assert_eq!(next, 2);
    let r = feed(&format!("?after={next}"));
    let c = r.json["changes"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0]["dataset"], "death");
    assert!(c[0]["fields"].get("cause_of_death").is_none());
    assert!(!r.text.contains("心力衰竭"));
    assert_eq!((c[1]["op"].as_str(), c[1]["key"].as_str()), (Some("delete"), Some(P2)));
    let end = r.json["next"].as_u64().unwrap();
    assert_eq!(end, 4);
    // Each change delivered is on record with the subscription it came under.
    let r = s.req("GET", "/v1/audit?department=shebao-counter").token(tokens::AUDITOR).get();
    let delivered: Vec<&Value> = r.json["entries"].as_array().unwrap().iter()
        .filter(|e| e["action"] == "change_feed" && e["key"].is_string()).collect();
    assert_eq!(delivered.len(), 3 + 2 + 2, "{}", r.text);
    for e in delivered {
        let approvals = e["approvals"].as_array().unwrap();
        assert_eq!(approvals.len(), 1, "{e}");
        assert_eq!(approvals[0]["dataset"], e["datasets"][0], "{e}");
        if e["datasets"][0] == "hukou" {
            assert_eq!(approvals[0]["grant"], id, "{e}");
        }
    }
    // The provider sees its own conditional field in the feed.
    let r = s.req("GET", "/v1/changes?limit=1").token(tokens::GONGAN).purpose("x").get();
    assert_eq!(r.json["changes"][0]["fields"]["photo"], "aGVsbG8=");

    for q in ["?limit=0", "?limit=5000", "?wait=3600", "?after=-1"] {
        assert_eq!(feed(q).status, 400, "{q}");
    }
    assert_eq!(s.req("GET", "/v1/changes").token(tokens::COUNTER).get().code(), "purpose_required");

    // Long poll: nothing yet, then an update arrives while waiting.
    let started = Instant::now();
    let r = feed(&format!("?after={end}&wait=1"));
    assert!(r.json["changes"].as_array().unwrap().is_empty());
    assert_eq!(r.json["next"].as_u64(), Some(end));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let addr = s.addr.clone();
    let poll = std::thread::spawn(move || {
        let started = Instant::now();
        let r = agent()
            .get(&format!("http://{addr}/v1/changes?after={end}&wait=20"))
            .header("authorization", format!("Bearer {}", tokens::COUNTER))
            .header("x-purpose", "p")
            .call()
            .unwrap()
            .body_mut()
            .read_json::<Value>()
            .unwrap();
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 2, "张叁")]);
    let (r, took) = poll.join().unwrap();
    assert_eq!(r["changes"][0]["seq"].as_u64(), Some(end + 1), "{r}");
    assert!(took < Duration::from_secs(10), "long poll did not wake: {took:?}");

    // Reads of the feed are audited per change, with the key.
    let a = s.req("GET", &format!("/v1/audit?key={P1}")).token(tokens::AUDITOR).get();
    assert!(a.json["entries"].as_array().unwrap().iter().any(|e| e["action"] == "change_feed"), "{}", a.text);
}

#[test]
fn reports_count_use_and_timeliness() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &config(0, ""), &[]);
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三"), hukou(P2, 1, "李四")]);
    for _ in 0..3 {
        s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::COUNTER).purpose("x").get();
    }
    s.req("POST", &format!("/v1/persons/{P1}/verify")).token(tokens::COUNTER).purpose("x").json(&json!({"fields": {"name": "张三"}}));
    s.req("POST", "/v1/datasets/hukou/updates").token(tokens::SHICHANG).ndjson(&[hukou(P1, 9, "x")]);

    let r = s.req("GET", "/v1/reports/sharing").token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    let row = |id: &str| r.json["departments"].as_array().unwrap().iter().find(|d| d["department"] == id).unwrap().clone();
    let counter = row("shebao-counter");
    assert_eq!((counter["lookups"].as_u64(), counter["verifications"].as_u64()), (Some(3), Some(1)), "{counter}");
    let gongan = row("gongan");
    assert_eq!((gongan["records_provided"].as_u64(), gongan["updates_applied"].as_u64()), (Some(2), Some(2)), "{gongan}");
    assert_eq!(row("shichang")["denials"].as_u64(), Some(1));
    let r2 = s.req("GET", "/v1/reports/sharing?from=2000-01-01T00:00:00Z&to=2000-12-31T00:00:00Z").token(tokens::ADMIN).get();
    assert_eq!(r2.json["departments"].as_array().unwrap().iter().map(|d| d["lookups"].as_u64().unwrap()).sum::<u64>(), 0);
    assert_eq!(s.req("GET", "/v1/reports/sharing").token(tokens::COUNTER).get().status, 403);

    let f = s.req("GET", "/v1/reports/freshness").token(tokens::AUDITOR).get();
    let hukou = f.json["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == "hukou").unwrap().clone();
    assert_eq!((hukou["records"].as_u64(), hukou["overdue"].as_bool()), (Some(2), Some(false)), "{hukou}");
    s.terminate();

    // Ten days without an update: a realtime dataset's provider is overdue.
    let s = Server::start_in(dir.path(), &config(10, ""), &[]);
    let f = s.req("GET", "/v1/reports/freshness").token(tokens::AUDITOR).get();
    let hukou = f.json["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == "hukou").unwrap().clone();
    assert_eq!(hukou["overdue"], true, "{hukou}");
    let death = f.json["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == "death").unwrap().clone();
    assert_eq!(death["overdue"], false, "an empty dataset is not overdue: {death}");
}

#[test]
fn a_refused_verification_names_no_approval() {
    let s = Server::start(&standard_config());
    let adoption = json!({"key": P1, "version": 1, "fields": {"name": "张三", "role": "adoptee", "adoption_certificate_no": "民收字001"}});
    let r = s.req("POST", "/v1/datasets/adoption/updates").token(tokens::MINZHENG).ndjson(&[adoption]);
    assert_eq!(r.json["applied"], 1, "{}", r.text);
    // The counter may read (and so verify) the adopted person's name, and
    // nothing else of the record: none of it may be verified without reading.
    let r = s.req("POST", "/v1/grants").token(tokens::COUNTER)
        .json(&json!({"dataset": "adoption", "fields": ["name"], "purpose": "收养登记核验", "legal_basis": "《收养登记办法》"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let r = s.req("POST", &format!("/v1/grants/{id}/decision")).token(tokens::MINZHENG).json(&json!({"approve": true}));
    assert_eq!(r.json["state"], "approved", "{}", r.text);
    let verify = |fields: Value| {
        s.req("POST", &format!("/v1/persons/{P1}/verify")).token(tokens::COUNTER).purpose("收养登记核验")
            .json(&json!({"dataset": "adoption", "fields": fields}))
    };
    let r = verify(json!({"name": "张三"}));
    assert_eq!((r.status, r.json["result"].as_str()), (200, Some("match")), "{}", r.text);
    // The name is granted, the role is not: refused, and the refusal on
    // record relied on no approval, although the name came first.
    let r = verify(json!({"name": "张三", "role": "adoptee"}));
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    let r = s.req("GET", "/v1/audit?department=shebao-counter").token(tokens::AUDITOR).get();
    let entries = r.json["entries"].as_array().unwrap();
    let approvals = |action: &str| -> Vec<usize> {
        entries.iter().filter(|e| e["action"] == action).map(|e| e["approvals"].as_array().unwrap().len()).collect()
    };
    assert_eq!((approvals("verify"), approvals("denied")), (vec![1], vec![0]), "{}", r.text);
}
