//! Verification as a side channel: a field that a few guesses would reveal
//! (a code list, or text a word list covers) and that a department may
//! not read is narrowed down by each verdict, so its distinct claims
//! are counted per subject and refused beyond the limit (audited, flagged
//! in the sharing report, kept across a restart), and it is never
//! verified in bulk. The built-in catalog marks its few-valued protected
//! fields unverifiable outright; here a catalog that leaves a newborn's
//! health status verifiable shows the limit itself.

use basedata_tests::*;
use serde_json::{json, Value};

const CHILD: &str = "440305202401010011";
const OTHER: &str = "440305202402020019";

/// The built-in catalog with `birth.health_status` verifiable (a code
/// list of three values, conditional: the counter may not read it).
fn catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let builtin = include_str!("../../store/catalog/default.toml");
    let anchor = "name = \"health_status\"";
    let at = builtin.find(anchor).expect("the built-in catalog has birth.health_status");
    let rest = &builtin[at..];
    let off = rest.find("verifiable = false\n").expect("health_status is unverifiable in the built-in catalog");
    let text = format!("{}{}{}", &builtin[..at], &rest[..off], &rest[off + "verifiable = false\n".len()..]);
    let path = dir.join("catalog.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn config(catalog: &std::path::Path, distinct: u32) -> String {
    format!(
        "catalog = \"{}\"\n[policy]\ndistinct_claims = {distinct}\nclaim_period_days = 30\n\n{}",
        catalog.display(),
        standard_config()
    )
}

fn verify(s: &Server, token: &str, key: &str, status: &str) -> Resp {
    s.req("POST", &format!("/v1/persons/{key}/verify"))
        .token(token)
        .purpose("新生儿医疗救助核验")
        .json(&json!({"dataset": "birth", "fields": {"health_status": status}}))
}

fn refusals(s: &Server, department: &str) -> u64 {
    let r = s.req("GET", "/v1/reports/sharing").token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    let rows = r.json["departments"].as_array().unwrap();
    let row = rows.iter().find(|d| d["department"] == department).expect("department in the report");
    row["claim_limit_refusals"].as_u64().unwrap()
}

#[test]
fn distinct_claims_of_a_few_valued_field_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    let mut s = Server::start_in(dir.path(), &config(&cat, 2), &[]);
    let births: Vec<Value> = [(CHILD, "2"), (OTHER, "1")]
        .iter()
        .map(|(k, h)| json!({"key": k, "version": 1, "fields": {"name": "新生儿", "gender": "1", "health_status": h}}))
        .collect();
    let r = s.req("POST", "/v1/datasets/birth/updates").token(tokens::WEIJIAN).ndjson(&births);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["applied"], 2, "{}", r.text);

    // The counter may not read the field: its lookup withholds it.
    let r = s.req("GET", &format!("/v1/persons/{CHILD}?datasets=birth")).token(tokens::COUNTER).purpose("核验").get();
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["datasets"]["birth"]["fields"].get("health_status").is_none(), "{}", r.text);

    // Two different claims are answered, and repeating one is free.
    let first = verify(&s, tokens::COUNTER, CHILD, "1");
    assert_eq!((first.status, first.json["fields"]["health_status"].as_str()), (200, Some("mismatch")), "{}", first.text);
    let second = verify(&s, tokens::COUNTER, CHILD, "2");
    assert_eq!((second.status, second.json["fields"]["health_status"].as_str()), (200, Some("match")), "{}", second.text);
    for _ in 0..3 {
        assert_eq!(verify(&s, tokens::COUNTER, CHILD, "1").status, 200);
    }
    assert_eq!(refusals(&s, "shebao-counter"), 0);

    // A third different value is guessing: refused, with the limit said.
    let third = verify(&s, tokens::COUNTER, CHILD, "3");
    assert_eq!((third.status, third.code()), (403, "claim_limit"), "{}", third.text);
    let details = &third.json["error"]["details"];
    assert_eq!((details["dataset"].as_str(), details["field"].as_str()), (Some("birth"), Some("health_status")));
    assert_eq!((details["distinct_claims"].as_u64(), details["period_days"].as_u64()), (Some(2), Some(30)));
    assert!(third.json.get("fields").is_none() && !third.text.contains("match"), "{}", third.text);

    // Audited as a refusal with its code, and flagged in the report.
    let r = s.req("GET", &format!("/v1/audit?key={CHILD}&department=shebao-counter")).token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    let entries = r.json["entries"].as_array().unwrap();
    let denied: Vec<&Value> = entries.iter().filter(|e| e["action"] == "denied").collect();
    assert_eq!(denied.len(), 1, "{}", r.text);
    assert_eq!(denied[0]["outcome"], "claim_limit");
    assert_eq!(entries.iter().filter(|e| e["action"] == "verify").count(), 5, "{}", r.text);
    assert_eq!(refusals(&s, "shebao-counter"), 1);

    // Counted per subject and per department: another newborn, and the
    // provider, which may read the field, are not limited.
    for h in ["1", "2"] {
        assert_eq!(verify(&s, tokens::COUNTER, OTHER, h).status, 200);
    }
    for h in ["1", "2", "3"] {
        assert_eq!(verify(&s, tokens::WEIJIAN, CHILD, h).status, 200);
    }
    // Fields of many values are not counted.
    for name in ["甲", "乙", "丙", "丁"] {
        let r = s
            .req("POST", &format!("/v1/persons/{CHILD}/verify"))
            .token(tokens::COUNTER)
            .purpose("核验")
            .json(&json!({"dataset": "birth", "fields": {"name": name}}));
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Never in bulk: a batch line claiming the field is refused, the others answered.
    let lines = [
        json!({"ref": "a", "subject": "person", "key": OTHER, "dataset": "birth", "fields": {"health_status": "1"}}),
        json!({"ref": "b", "subject": "person", "key": OTHER, "dataset": "birth", "fields": {"name": "新生儿"}}),
    ];
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("批量核验").ndjson(&lines);
    assert_eq!(r.status, 200, "{}", r.text);
    let out: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(out[0]["error"]["code"], "forbidden", "{}", r.text);
    assert!(out[0]["error"]["message"].as_str().unwrap().contains("one subject at a time"), "{}", r.text);
    assert_eq!(out[1]["result"], "match", "{}", r.text);

    // The count survives a restart.
    s.terminate();
    drop(s);
    let s = Server::start_in(dir.path(), &config(&cat, 2), &[]);
    assert_eq!(verify(&s, tokens::COUNTER, CHILD, "3").code(), "claim_limit");
    assert_eq!(verify(&s, tokens::COUNTER, CHILD, "2").status, 200);
    assert_eq!(refusals(&s, "shebao-counter"), 2);
}

/// With the built-in catalog the few-valued protected fields are not
/// verifiable at all by departments that may not read them.
#[test]
fn builtin_protected_codes_are_not_verifiable() {
    let s = Server::start(&standard_config());
    let r = s
        .req("POST", "/v1/datasets/birth/updates")
        .token(tokens::WEIJIAN)
        .ndjson(&[json!({"key": CHILD, "version": 1, "fields": {"name": "新生儿", "health_status": "2"}})]);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = verify(&s, tokens::COUNTER, CHILD, "2");
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    let r = s.req("GET", "/v1/catalog").token(tokens::COUNTER).get();
    let birth = r.json["datasets"].as_array().unwrap().iter().find(|d| d["id"] == "birth").unwrap().clone();
    let field = birth["fields"].as_array().unwrap().iter().find(|f| f["name"] == "health_status").unwrap().clone();
    assert_eq!((field["verifiable"].as_bool(), field["few_values"].as_bool()), (Some(false), Some(true)), "{field}");
}

/// A protected text field is guessed from a short word list as surely as
/// a code list: a cause of death (`none`, never disclosed) is counted
/// like one, and never verified in bulk, while binary content is not.
#[test]
fn a_protected_text_field_is_not_guessed_from_a_word_list() {
    const DEAD: &str = "440305195003030014";
    let s = Server::start(&standard_config());
    let death = json!({"key": DEAD, "version": 1, "fields": {"name": "逝者", "death_date": "2026-01-02", "cause_of_death": "意外伤害"}});
    let r = s.req("POST", "/v1/datasets/death/updates").token(tokens::WEIJIAN).ndjson(&[death]);
    assert_eq!((r.status, r.json["applied"].as_u64()), (200, Some(1)), "{}", r.text);
    let words = ["心脏病", "肺癌", "脑卒中", "肝硬化", "糖尿病", "意外伤害", "肺炎", "肾衰竭", "自然死亡"];

    // A batch of guesses: every line refused, none answered.
    let lines: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"ref": i.to_string(), "subject": "person", "key": DEAD, "dataset": "death", "fields": {"cause_of_death": w}}))
        .collect();
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("批量核验").ndjson(&lines);
    assert_eq!(r.status, 200, "{}", r.text);
    let out: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(out.len(), words.len(), "{}", r.text);
    for line in &out {
        assert_eq!(line["error"]["code"], "forbidden", "{}", r.text);
        assert!(line.get("result").is_none(), "{}", r.text);
    }

    // One at a time: two different claims answered, the third refused.
    let one = |w: &str| {
        s.req("POST", &format!("/v1/persons/{DEAD}/verify"))
            .token(tokens::COUNTER)
            .purpose("核验")
            .json(&json!({"dataset": "death", "fields": {"cause_of_death": w}}))
    };
    assert_eq!(one(words[0]).json["fields"]["cause_of_death"], "mismatch");
    assert_eq!(one(words[1]).json["fields"]["cause_of_death"], "mismatch");
    let third = one(words[5]);
    assert_eq!((third.status, third.code()), (403, "claim_limit"), "{}", third.text);
    assert!(!third.text.contains("match"), "{}", third.text);

    // The catalog says which fields are counted.
    let r = s.req("GET", "/v1/catalog").token(tokens::COUNTER).get();
    let field = |ds: &str, name: &str| {
        let d = r.json["datasets"].as_array().unwrap().iter().find(|d| d["id"] == ds).unwrap().clone();
        d["fields"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap().clone()
    };
    assert_eq!(field("death", "cause_of_death")["few_values"], true);
    assert_eq!(field("death", "death_place")["few_values"], true);
    assert!(field("hukou", "photo").get("few_values").is_none(), "binary content is not counted");
}
