//! End-to-end rules of purpose (用途) with the release binary: a department
//! with a purpose list states only its catalogued codes (anything else is
//! refused and audited), a grant opens its fields only for uses under the
//! purpose it was applied for, free text still works for departments
//! without a list and is flagged in the sharing report, and departments
//! publish their responsible persons, changed by administrators only.

use basedata_tests::*;
use serde_json::{json, Value};

const P1: &str = "11010519491231002X";
const STRICT: &str = "t-strict-counter-0000";

/// The standard departments plus `yibao`, a consumer with a purpose list,
/// and responsible persons for `gongan` (current) and `shenji` (named long ago).
fn config(extra: &str) -> String {
    format!(
        "{}[[departments]]\nid = \"yibao\"\nroles = [\"consumer\"]\ntoken = \"{STRICT}\"\npurposes = [\"medical_insurance\", \"identity_check\"]\n{extra}",
        standard_config()
            .replace(
                "id = \"gongan\"\n",
                "id = \"gongan\"\nresponsible = [{ name = \"测试联络员\", post = \"信息中心主任\", contact = \"020-00000000\", since = \"2026-01-05\" }]\n"
            )
            .replace(
                "id = \"shenji\"\n",
                "id = \"shenji\"\nresponsible = [{ name = \"测试审计员\", post = \"科长\", contact = \"020-00000009\", since = \"2010-01-01\" }]\n"
            )
    )
}

fn seed(s: &Server) {
    let line = json!({"key": P1, "version": 1, "fields": {"name": "张三", "gender": "2", "birth_date": "1949-12-31", "status": "normal", "photo": "aGVsbG8="}});
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[line]);
    assert_eq!(r.status, 200, "{}", r.text);
}

fn lookup(s: &Server, token: &str, purpose: &str) -> Resp {
    s.req("GET", &format!("/v1/persons/{P1}?datasets=hukou")).token(token).purpose(purpose).get()
}

fn audit_of(s: &Server, department: &str) -> Vec<Value> {
    audit_entries(s, &format!("&department={department}"))
}

#[test]
fn strict_departments_state_catalogued_purposes_and_refusals_are_audited() {
    let s = Server::start(&config(""));
    seed(&s);
    let catalog = s.req("GET", "/v1/catalog").token(STRICT).get();
    let codes: Vec<&str> = catalog.json["purposes"].as_array().unwrap().iter().filter_map(|p| p["code"].as_str()).collect();
    assert!(codes.contains(&"medical_insurance") && codes.contains(&"social_insurance"), "{codes:?}");

    for (purpose, reason) in [("no_such_purpose", "unknown"), ("医保待遇核验", "unknown"), ("social_insurance; 业务 1", "not_allowed")] {
        let r = lookup(&s, STRICT, purpose);
        assert_eq!((r.status, r.code()), (403, "purpose_not_allowed"), "{purpose}: {}", r.text);
        assert_eq!(r.json["error"]["details"]["reason"], reason, "{}", r.text);
        assert_eq!(r.json["error"]["details"]["allowed"], json!(["medical_insurance", "identity_check"]));
    }
    // Every kind of subject read goes through the same rule.
    let v = s.req("POST", &format!("/v1/persons/{P1}/verify")).token(STRICT).purpose("social_insurance")
        .json(&json!({"fields": {"name": "张三"}}));
    assert_eq!(v.code(), "purpose_not_allowed", "{}", v.text);
    assert_eq!(s.req("GET", "/v1/changes").token(STRICT).purpose("x").get().code(), "purpose_not_allowed");

    let ok = lookup(&s, STRICT, "medical_insurance; 住院报销 2026-001");
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.json["datasets"]["hukou"]["fields"]["name"], "张三");

    let entries = audit_of(&s, "yibao");
    let denied: Vec<&Value> = entries.iter().filter(|e| e["action"] == "denied").collect();
    assert_eq!(denied.len(), 5, "{entries:?}");
    assert_eq!(denied[0]["purpose"], "no_such_purpose");
    assert!(denied[0]["outcome"].as_str().unwrap().starts_with("purpose_not_allowed"), "{:?}", denied[0]);
    let used = entries.iter().find(|e| e["action"] == "lookup").expect("the admitted lookup is audited");
    assert_eq!(used["purpose"], "medical_insurance; 住院报销 2026-001");
    assert_eq!(used["purpose_code"], "medical_insurance");

    // A department without a list still states free text (the transitional
    // mode); a catalogued code it names is recorded as such.
    assert_eq!(lookup(&s, tokens::COUNTER, "办理社保业务").status, 200);
    assert_eq!(lookup(&s, tokens::COUNTER, "social_insurance; 窗口 3").status, 200);
    let counter = audit_of(&s, "shebao-counter");
    let codes: Vec<&Value> = counter.iter().filter(|e| e["action"] == "lookup").map(|e| &e["purpose_code"]).collect();
    assert_eq!(codes, [&Value::Null, &json!("social_insurance")]);

    let report = s.req("GET", "/v1/reports/sharing").token(tokens::AUDITOR).get();
    let row = |id: &str| report.json["departments"].as_array().unwrap().iter().find(|d| d["department"] == id).unwrap().clone();
    let (strict, free) = (row("yibao"), row("shebao-counter"));
    assert_eq!((strict["purpose_mode"].as_str(), strict["uses_without_catalogued_purpose"].as_u64()), (Some("strict"), Some(0)), "{strict}");
    assert_eq!(strict["denials"].as_u64(), Some(5), "{strict}");
    assert_eq!((free["purpose_mode"].as_str(), free["uses_without_catalogued_purpose"].as_u64()), (Some("transitional"), Some(1)), "{free}");
    assert_eq!(free["flagged"], true, "{free}");
}

#[test]
fn a_grant_opens_its_fields_only_for_the_purpose_applied_for() {
    let s = Server::start(&config(""));
    seed(&s);
    let apply = |purpose: &str| {
        s.req("POST", "/v1/grants").token(STRICT)
            .json(&json!({"dataset": "hukou", "fields": ["photo"], "purpose": purpose, "legal_basis": "《医疗保障基金使用监督管理条例》"}))
    };
    // A strict department applies for one of its own purposes.
    let r = apply("social_insurance; 照片比对");
    assert_eq!((r.status, r.code()), (403, "purpose_not_allowed"), "{}", r.text);
    let r = apply("medical_insurance; 住院身份核实比对照片");
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!((r.json["kind"].as_str(), r.json["purpose_code"].as_str()), (Some("fields"), Some("medical_insurance")));
    let id = r.json["id"].as_str().unwrap().to_owned();
    let d = s.req("POST", &format!("/v1/grants/{id}/decision")).token(tokens::GONGAN).json(&json!({"approve": true}));
    assert_eq!(d.json["state"], "approved", "{}", d.text);

    let under = lookup(&s, STRICT, "medical_insurance");
    assert_eq!(under.json["datasets"]["hukou"]["fields"]["photo"], "aGVsbG8=", "{}", under.text);
    let other = lookup(&s, STRICT, "identity_check; 窗口核验");
    assert_eq!(other.status, 200, "{}", other.text);
    assert!(other.json["datasets"]["hukou"]["fields"].get("photo").is_none(), "{}", other.text);
    let withheld: Vec<&Value> = other.json["withheld"].as_array().unwrap().iter().filter(|w| w["field"] == "photo").collect();
    assert_eq!(withheld[0]["reason"], "granted_for_other_purpose", "{}", other.text);

    // A free-text grant of a department without a list covers its
    // free-text uses, not one that names a catalogued purpose.
    let r = s.req("POST", "/v1/grants").token(tokens::COUNTER)
        .json(&json!({"dataset": "hukou", "fields": ["photo"], "purpose": "社保待遇资格认证", "legal_basis": "b"}));
    let id = r.json["id"].as_str().unwrap().to_owned();
    s.req("POST", &format!("/v1/grants/{id}/decision")).token(tokens::GONGAN).json(&json!({"approve": true}));
    assert!(lookup(&s, tokens::COUNTER, "认证").json["datasets"]["hukou"]["fields"].get("photo").is_some());
    assert!(lookup(&s, tokens::COUNTER, "tax_administration").json["datasets"]["hukou"]["fields"].get("photo").is_none());
}

#[test]
fn departments_publish_responsible_persons_and_changes_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("[policy]\nresponsible_max_age_days = 3650\n");
    let s = Server::start_in(dir.path(), &cfg, &[]);
    let list = s.req("GET", "/v1/departments").token(tokens::COUNTER).get();
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(!list.text.contains("t-gongan") && !list.text.contains("token"), "credentials leaked: {}", list.text);
    let dept = |l: &Resp, id: &str| l.json["departments"].as_array().unwrap().iter().find(|d| d["id"] == id).unwrap().clone();
    let gongan = dept(&list, "gongan");
    assert_eq!(gongan["responsible"][0]["name"], "测试联络员", "{gongan}");
    assert_eq!((gongan["responsible_source"].as_str(), gongan["responsible_as_of"].as_str()), (Some("config"), Some("2026-01-05")));
    assert_eq!(gongan["roles"], json!(["provider", "consumer"]));
    assert_eq!(dept(&list, "yibao")["purposes"], json!(["medical_insurance", "identity_check"]));
    assert_eq!(dept(&list, "admin")["responsible"], json!([]));

    let record = json!({"persons": [{"name": "测试新联络员", "post": "副主任", "contact": "test@example.org", "since": "2026-11-01"}]});
    let put = |token: &str, id: &str, body: &Value| s.req("PUT", &format!("/v1/departments/{id}/responsible")).token(token).json(body);
    assert_eq!(put(tokens::COUNTER, "shebao-counter", &record).code(), "forbidden");
    assert_eq!(put(tokens::ADMIN, "nobody", &record).code(), "not_found");
    for bad in [
        json!({"persons": []}),
        json!({"persons": [{"name": "x", "post": "y", "contact": "z", "since": "someday"}]}),
        json!({"persons": [{"name": " ", "post": "y", "contact": "z", "since": "2026-01-01"}]}),
        json!({"persons": [{"name": "x", "post": "y", "contact": "z"}]}),
    ] {
        let r = put(tokens::ADMIN, "shebao-counter", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    let r = put(tokens::ADMIN, "shebao-counter", &record);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["responsible_source"].as_str(), r.json["responsible_updated_by"].as_str()), (Some("api"), Some("admin")));
    let counter = dept(&s.req("GET", "/v1/departments").token(tokens::SHICHANG).get(), "shebao-counter");
    assert_eq!(counter["responsible"][0]["contact"], "test@example.org", "{counter}");

    let entries = audit_of(&s, "admin");
    let change = entries.iter().find(|e| e["action"] == "responsible").expect("the change is audited");
    assert!(change["outcome"].as_str().unwrap().contains("shebao-counter"), "{change}");
    assert!(change["at"].as_str().unwrap().starts_with("20"), "{change}");

    // The report flags missing and out-of-date records (shenji named its
    // person in 2010, past the ten years allowed here).
    let report = s.req("GET", "/v1/reports/sharing").token(tokens::AUDITOR).get();
    let row = |id: &str| report.json["departments"].as_array().unwrap().iter().find(|d| d["department"] == id).unwrap().clone();
    assert_eq!(row("shebao-counter")["responsible_record"], "current");
    assert_eq!(row("gongan")["responsible_record"], "current");
    assert_eq!((row("shenji")["responsible_record"].as_str(), row("shenji")["flagged"].as_bool()), (Some("out_of_date"), Some(true)));
    assert_eq!((row("admin")["responsible_record"].as_str(), row("admin")["flagged"].as_bool()), (Some("missing"), Some(true)));

    // The record survives a restart.
    drop(s);
    let s = Server::start_in(dir.path(), &cfg, &[]);
    let counter = dept(&s.req("GET", "/v1/departments").token(tokens::COUNTER).get(), "shebao-counter");
    assert_eq!(counter["responsible"][0]["name"], "测试新联络员", "{counter}");
}

/// Offline comparison follows the same purpose rules: a strict
/// department's refused purpose stops it before any line is read, and the
/// refusal is on record like one over the API.
#[test]
fn offline_compare_refuses_and_records_a_purpose_the_department_may_not_state() {
    let scratch = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(scratch.path(), &config(""), &[]);
    seed(&s);
    assert!(s.terminate().success());
    let (input, output) = (scratch.path().join("in.ndjson"), scratch.path().join("out.ndjson"));
    std::fs::write(&input, format!("{}\n", json!({"subject": "person", "key": P1, "fields": {"name": "张三"}}))).unwrap();
    let data = scratch.path().join("data");
    let cfg = s.config.clone();
    let args = |purpose: &'static str| {
        let mut a: Vec<String> = ["compare", "--data"].iter().map(|x| x.to_string()).collect();
        for x in [data.to_str().unwrap(), "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()] {
            a.push(x.to_owned());
        }
        for x in ["--department", "yibao", "--purpose", purpose, "--config", cfg.to_str().unwrap()] {
            a.push(x.to_owned());
        }
        a
    };
    let run = |purpose: &'static str| {
        let a = args(purpose);
        run_cli(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (st, _, err) = run("social_insurance; 离线比对");
    assert!(!st.success() && err.contains("not_allowed") && err.contains("medical_insurance"), "{err}");
    let (st, _, err) = run("medical_insurance; 离线比对");
    assert!(st.success(), "{err}");
    let answers = std::fs::read_to_string(&output).unwrap();
    assert!(answers.contains("\"match\""), "{answers}");

    let s = Server::start_in(scratch.path(), &config(""), &[]);
    let entries = audit_of(&s, "yibao");
    let denied: Vec<&Value> = entries.iter().filter(|e| e["action"] == "denied").collect();
    assert_eq!(denied.len(), 1, "{entries:?}");
    assert_eq!(denied[0]["outcome"], "purpose_not_allowed: purpose not_allowed");
    assert_eq!(denied[0]["purpose"], "social_insurance; 离线比对");
    assert_eq!(entries.iter().filter(|e| e["action"] == "batch_verify").count(), 1, "{entries:?}");
}
