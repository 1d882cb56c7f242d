//! End to end over HTTP with the release binary: providers push updates,
//! counters look up and verify, auditors see every use; data and audit
//! chain survive a restart.

use basedata_tests::*;
use serde_json::{json, Value};

const P1: &str = "11010519491231002X";
const P2: &str = "440305198001010013";
const E1: &str = "91350100M000100Y43";

fn hukou(key: &str, version: u64, name: &str, status: &str) -> Value {
    let (born, sex) = encoded(key);
    json!({"key": key, "version": version, "op": "upsert",
           "fields": {"name": name, "gender": sex, "birth_date": born, "status": status, "photo": "aGVsbG8="}})
}

fn push(s: &Server, token: &str, ds: &str, lines: &[Value]) -> Resp {
    s.req("POST", &format!("/v1/datasets/{ds}/updates")).token(token).ndjson(lines)
}

#[test]
fn updates_are_validated_applied_and_versioned() {
    let s = Server::start(&standard_config());
    let r = push(&s, tokens::GONGAN, "hukou", &[
        hukou(P1, 1, "张三", "normal"),
        json!({"key": "110105194912310021", "version": 1, "fields": {}}),
        json!({"key": P2, "version": 1, "fields": {"name": "李四", "gender": "1", "birth_date": "1980-01-01", "status": "normal", "nickname": "x"}}),
        json!({"key": P2, "version": 1, "fields": {"name": "李四", "gender": "7", "birth_date": "1980-01-01", "status": "normal"}}),
    ]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["applied"], 1);
    assert_eq!(r.json["stale"], 0);
    let rej = r.json["rejected"].as_array().unwrap();
    let codes: Vec<(u64, &str)> = rej.iter().map(|x| (x["line"].as_u64().unwrap(), x["code"].as_str().unwrap())).collect();
    assert_eq!(codes, vec![(2, "invalid_key"), (3, "unknown_field"), (4, "invalid_value")]);
    assert_eq!(rej[1]["key"], P2);
    assert!(r.json["last_seq"].as_u64().unwrap() >= 1);

    // Replays are stale; a newer version applies; a JSON array works too.
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN)
        .json(&json!([hukou(P1, 1, "张三", "normal"), hukou(P1, 2, "张三", "cancelled")]));
    assert_eq!((r.json["applied"].as_u64(), r.json["stale"].as_u64()), (Some(1), Some(1)), "{}", r.text);

    // One datum, one source: another department may not write hukou.
    let r = push(&s, tokens::SHICHANG, "hukou", &[hukou(P1, 9, "王五", "normal")]);
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = push(&s, tokens::GONGAN, "no_such_dataset", &[]);
    assert_eq!((r.status, r.code()), (404, "unknown_dataset"));
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).send(Some(("application/json", b"{not json".to_vec())));
    assert_eq!((r.status, r.code()), (400, "invalid_body"));
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).send(Some(("image/png", b"x".to_vec())));
    assert_eq!((r.status, r.code()), (400, "invalid_body"));

    let r = s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::COUNTER).purpose("低保资格复核").get();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["datasets"]["hukou"]["version"], 2);
    assert_eq!(r.json["datasets"]["hukou"]["fields"]["status"], "cancelled");
}

#[test]
fn body_limit_is_enforced() {
    let cfg = format!("max_body_mb = 1\n{}", standard_config());
    let s = Server::start(&cfg);
    let line = hukou(P1, 1, &"张".repeat(300), "normal");
    let lines: Vec<Value> = (0..1500).map(|_| line.clone()).collect();
    let r = push(&s, tokens::GONGAN, "hukou", &lines);
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    let r = s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!(r.status, 404, "nothing of a refused body may be applied");
}

#[test]
fn lookups_filter_by_share_class_and_time() {
    let s = Server::start(&standard_config());
    assert_eq!(push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三", "normal")]).json["applied"], 1);
    let death = json!({"key": P1, "version": 1, "fields": {"name": "张三", "death_date": "2020-02-02", "cause_of_death": "心力衰竭"}});
    assert_eq!(push(&s, tokens::WEIJIAN, "death", &[death]).json["applied"], 1, "death");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let between = time_now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 2, "张叁", "cancelled")]).json["applied"], 1);

    let r = s.req("GET", &format!("/v1/persons/{}", P1.to_lowercase())).token(tokens::COUNTER).purpose("社保待遇资格认证").get();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["key"], P1);
    assert_eq!(r.json["subject"], "person");
    assert_eq!(r.json["datasets"]["hukou"]["fields"]["name"], "张叁");
    assert!(r.json["datasets"]["hukou"]["fields"].get("photo").is_none());
    assert!(r.json["datasets"]["death"]["fields"].get("cause_of_death").is_none());
    assert_eq!(r.json["datasets"]["death"]["fields"]["death_date"], "2020-02-02");
    let withheld = r.json["withheld"].as_array().unwrap();
    assert!(withheld.contains(&json!({"dataset": "hukou", "field": "photo", "share": "conditional", "reason": "no_grant"})));
    assert!(withheld.contains(&json!({"dataset": "death", "field": "cause_of_death", "share": "none", "reason": "not_shared"})));
    assert!(!r.text.contains("心力衰竭"));

    let r = s.req("GET", &format!("/v1/persons/{P1}?datasets=hukou&as_of={between}")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["datasets"]["hukou"]["fields"]["name"], "张三");
    assert!(r.json["datasets"].get("death").is_none());
    let r = s.req("GET", &format!("/v1/persons/{P1}?as_of=2000-01-01T00:00:00Z")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // The provider sees its own conditional field; nobody sees `none` fields.
    let r = s.req("GET", &format!("/v1/persons/{P1}?datasets=hukou")).token(tokens::GONGAN).purpose("x").get();
    assert_eq!(r.json["datasets"]["hukou"]["fields"]["photo"], "aGVsbG8=");

    for (path, status, code) in [
        (format!("/v1/persons/{P2}"), 404, "not_found"),
        ("/v1/persons/110105194912310021".into(), 400, "invalid_key"),
        (format!("/v1/persons/{P1}?datasets=market_registration"), 404, "unknown_dataset"),
        (format!("/v1/persons/{P1}?as_of=yesterday"), 400, "invalid_value"),
        (format!("/v1/entities/{E1}"), 404, "not_found"),
    ] {
        let r = s.req("GET", &path).token(tokens::COUNTER).purpose("x").get();
        assert_eq!((r.status, r.code()), (status, code), "{path}: {}", r.text);
    }
    let r = s.req("GET", "/v1/persons/110105194912310021").token(tokens::COUNTER).purpose("x").get();
    assert_eq!(r.json["error"]["details"]["reason"], "checksum");
    // A dataset of the other subject is said to be one, not absent.
    let r = s.req("GET", &format!("/v1/persons/{P1}?datasets=market_registration")).token(tokens::COUNTER).purpose("x").get();
    let message = r.json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("holds entity records, not person records") && message.contains("/v1/entities/"), "{}", r.text);
    let r = s.req("GET", &format!("/v1/persons/{P1}?datasets=no_such")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!((r.status, r.code()), (404, "unknown_dataset"), "{}", r.text);
    assert!(r.json["error"]["message"].as_str().unwrap_or_default().contains("in the catalog"), "{}", r.text);
    let r = s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::COUNTER).get();
    assert_eq!((r.status, r.code()), (400, "purpose_required"));
    let r = s.req("GET", &format!("/v1/persons/{P1}")).purpose("x").get();
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    // An auditor is not a consumer.
    let r = s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::AUDITOR).purpose("x").get();
    assert_eq!((r.status, r.code()), (403, "forbidden"));
}

fn time_now() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let micros = t.as_micros() as i64;
    basedata_store::value::format_datetime(micros)
}

#[test]
fn verification_answers_without_disclosing() {
    let s = Server::start(&standard_config());
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三", "cancelled")]);
    let death = json!({"key": P1, "version": 1, "fields": {"name": "张三", "death_date": "2020-02-02", "cause_of_death": "心力衰竭"}});
    push(&s, tokens::WEIJIAN, "death", &[death]);
    let verify = |key: &str, body: Value| s.req("POST", &format!("/v1/persons/{key}/verify")).token(tokens::COUNTER).purpose("核验").json(&body);

    let r = verify(P1, json!({"fields": {"name": " 张三 ", "birth_date": "19491231"}}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"key": P1, "dataset": "hukou", "result": "match", "fields": {"name": "match", "birth_date": "match"}}));
    let r = verify(P1, json!({"dataset": "hukou", "fields": {"name": "李四", "cancel_date": "2020-01-01"}}));
    assert_eq!(r.json["result"], "mismatch");
    assert_eq!(r.json["fields"], json!({"name": "mismatch", "cancel_date": "no_value"}));
    assert!(!r.text.contains("张三"));
    // A `none` field verifies, and its value never appears.
    let r = verify(P1, json!({"dataset": "death", "fields": {"cause_of_death": "心力衰竭"}}));
    assert_eq!(r.json["result"], "match");
    let r = verify(P1, json!({"dataset": "death", "fields": {"cause_of_death": "肺炎"}}));
    assert_eq!(r.json["result"], "mismatch");
    assert!(!r.text.contains("心力衰竭"));
    let r = verify(P2, json!({"fields": {"name": "张三"}}));
    assert_eq!(r.json, json!({"key": P2, "dataset": "hukou", "result": "not_found", "fields": {}}));

    for (body, code) in [
        (json!({"fields": {}}), "invalid_body"),
        (json!({"fields": {"nickname": "x"}}), "unknown_field"),
        (json!({"fields": {"birth_date": "not a date"}}), "invalid_value"),
        (json!({"dataset": "market_registration", "fields": {"name": "x"}}), "unknown_dataset"),
        (json!({"name": "x"}), "invalid_body"),
    ] {
        let r = verify(P1, body.clone());
        assert_eq!(r.code(), code, "{body}: {}", r.text);
        assert!(r.status == 400 || r.status == 404, "{body}");
    }
    let r = s.req("POST", &format!("/v1/persons/{P1}/verify")).token(tokens::COUNTER).purpose("x").send(Some(("application/json", b"[".to_vec())));
    assert_eq!((r.status, r.code()), (400, "invalid_body"));

    // Claims as a JSON object has them: the last of a repeated name kept,
    // answered in name order whatever the order given; `fields` that is
    // not an object is a body of the wrong shape, however malformed.
    let raw = |body: &str| {
        s.req("POST", &format!("/v1/persons/{P1}/verify")).token(tokens::COUNTER).purpose("核验").send(Some(("application/json", body.as_bytes().to_vec())))
    };
    let r = raw(r#"{"fields": {"name": "李四", "birth_date": "1949-12-31", "name": "张三"}}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    let want = format!(r#"{{"key":"{P1}","dataset":"hukou","result":"match","fields":{{"birth_date":"match","name":"match"}}}}"#);
    assert_eq!(r.text, want);
    for body in [r#"{"fields": ["name", "张三"]}"#, r#"{"fields": [1e400]}"#, r#"{"fields": "name"}"#] {
        let r = raw(body);
        assert_eq!((r.status, r.code()), (400, "invalid_body"), "{body}: {}", r.text);
        assert!(r.json["error"]["message"].as_str().unwrap_or_default().contains("wrong type"), "{body}: {}", r.text);
    }
}

#[test]
fn every_use_is_audited_and_the_chain_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &standard_config(), &[]);
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三", "normal"), hukou(P2, 1, "李四", "normal")]);
    s.req("GET", &format!("/v1/persons/{P1}")).token(tokens::COUNTER).purpose("低保复核").header("x-operator", "A0001").get();
    s.req("POST", &format!("/v1/persons/{P1}/verify")).token(tokens::COUNTER).purpose("核验").json(&json!({"fields": {"name": "张三"}}));
    s.req("GET", &format!("/v1/persons/{P2}")).token(tokens::SHICHANG).purpose("%E7%99%BB%E8%AE%B0").get();
    push(&s, tokens::SHICHANG, "hukou", &[hukou(P1, 5, "x", "normal")]); // denied

    let r = s.req("GET", &format!("/v1/audit?key={P1}")).token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    let entries = r.json["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["lookup", "verify"], "{}", r.text);
    assert_eq!(entries[0]["department"], "shebao-counter");
    assert_eq!(entries[0]["operator"], "A0001");
    assert_eq!(entries[0]["purpose"], "低保复核");
    assert_eq!(entries[0]["key"], P1);
    assert_eq!(entries[0]["subject"], "person");
    assert!(entries[0]["fields"].as_array().unwrap().contains(&json!("hukou.name")));
    assert_eq!(entries[1]["fields"], json!(["name"]));
    assert_eq!(entries[1]["outcome"], "match");
    assert_eq!(entries[0]["hash"].as_str().unwrap().len(), 64);

    let r = s.req("GET", "/v1/audit?department=shichang").token(tokens::AUDITOR).get();
    let entries = r.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{}", r.text);
    assert_eq!(entries[0]["purpose"], "登记");
    assert_eq!(entries[1]["action"], "denied");

    let r = s.req("GET", "/v1/audit?limit=2").token(tokens::ADMIN).get();
    assert_eq!(r.json["entries"].as_array().unwrap().len(), 2);
    let r = s.req("GET", "/v1/audit").token(tokens::COUNTER).get();
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = s.req("GET", "/v1/audit?from=2100-01-01T00:00:00Z").token(tokens::AUDITOR).get();
    assert!(r.json["entries"].as_array().unwrap().is_empty());

    let r = s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
    assert_eq!(r.json["ok"], true, "{}", r.text);
    let n = r.json["entries"].as_u64().unwrap();
    assert!(n >= 5, "{}", r.text);
    let head = r.json["head"].clone();

    // SIGKILL: everything acknowledged must be there after a restart.
    s.kill();
    let s = Server::start_in(dir.path(), &standard_config(), &[]);
    let r = s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
    assert_eq!((r.json["ok"].as_bool(), r.json["entries"].as_u64()), (Some(true), Some(n)));
    assert_eq!(r.json["head"], head);
    let r = s.req("GET", &format!("/v1/persons/{P2}")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!(r.json["datasets"]["hukou"]["fields"]["name"], "李四");
}

/// Verifications are answered from claim fingerprints held in memory:
/// they follow every update and delete at once, are the same after a
/// restart (the table is built again from the records) and the same as a
/// server that reads the records (`verify_prints = false`) gives.
#[test]
fn verifications_follow_updates_and_restarts_with_or_without_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &standard_config(), &[]);
    let verify = |s: &Server, key: &str, fields: Value| {
        let r = s.req("POST", &format!("/v1/persons/{key}/verify")).token(tokens::COUNTER).purpose("核验").json(&json!({"fields": fields}));
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    };
    let result = |j: Value| j["result"].as_str().unwrap().to_owned();
    let kept = |s: &Server| -> i64 {
        let m = s.req("GET", "/metrics").get().text;
        let line = m.lines().find(|l| l.starts_with("basedata_verify_prints_records ")).unwrap_or_else(|| panic!("no gauge in {m}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 1, "张三", "normal"), hukou(P2, 1, "李四", "normal")]);
    assert_eq!(kept(&s), 2);
    assert_eq!(result(verify(&s, P1, json!({"name": "张三"}))), "match");
    push(&s, tokens::GONGAN, "hukou", &[hukou(P1, 2, "张叁", "normal")]);
    assert_eq!(result(verify(&s, P1, json!({"name": "张三"}))), "mismatch", "the update is seen at once");
    assert_eq!(result(verify(&s, P1, json!({"name": "ＡＢ张叁"}))), "mismatch");
    assert_eq!(result(verify(&s, P1, json!({"name": "\u{3000}张叁 "}))), "match");
    push(&s, tokens::GONGAN, "hukou", &[json!({"key": P2, "version": 2, "op": "delete"})]);
    assert_eq!(result(verify(&s, P2, json!({"name": "李四"}))), "not_found", "the delete is seen at once");
    assert_eq!(kept(&s), 1);
    let claims = [
        (P1, json!({"name": "张叁", "birth_date": "1949年12月31日", "photo": "aGVsbG8="})),
        (P1, json!({"name": "张叁", "gender": "1", "cancel_date": "2020-01-01"})),
        (P2, json!({"name": "李四"})),
    ];
    let answers: Vec<Value> = claims.iter().map(|(k, f)| verify(&s, k, f.clone())).collect();
    assert_eq!(answers[0]["result"], "match", "{}", answers[0]);
    assert_eq!(answers[1]["fields"], json!({"name": "match", "gender": "mismatch", "cancel_date": "no_value"}));

    s.kill();
    let s = Server::start_in(dir.path(), &standard_config(), &[]);
    assert_eq!(kept(&s), 1, "built again at start");
    let again: Vec<Value> = claims.iter().map(|(k, f)| verify(&s, k, f.clone())).collect();
    assert_eq!(again, answers);
    drop(s);

    let reading = format!("verify_prints = false\n{}", standard_config());
    let s = Server::start_in(dir.path(), &reading, &[]);
    assert_eq!(kept(&s), -1, "not kept");
    let from_records: Vec<Value> = claims.iter().map(|(k, f)| verify(&s, k, f.clone())).collect();
    assert_eq!(from_records, answers);
}
