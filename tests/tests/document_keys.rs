//! End to end over HTTP with the release binary: subjects keyed by other
//! documents. A passport holder and an entity known by its business-licence
//! registration number are pushed, checked, looked up, verified and
//! compared in a batch by `id_type`; the entity is then assigned a credit
//! code, and both keys find the same record and the same audit trail.

use basedata_gen::{doc_key, entity_key, GenConfig};
use basedata_store::keys::DocType;
use basedata_tests::*;
use serde_json::{json, Value};

const GEN: GenConfig = GenConfig { persons: 10, entities: 10, seed: 7 };

fn push(s: &Server, token: &str, ds: &str, lines: &[Value]) -> Resp {
    s.req("POST", &format!("/v1/datasets/{ds}/updates")).token(token).ndjson(lines)
}

fn name_of(r: &Resp, ds: &str) -> String {
    r.json["datasets"][ds]["fields"]["name"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_passport_holder_is_pushed_checked_looked_up_and_verified() {
    let s = Server::start(&standard_config());
    let passport = doc_key(&GEN, DocType::Passport, 0);
    let pp = passport.as_str();
    let line = json!({"key": pp.to_lowercase(), "id_type": "passport", "version": 1,
                      "fields": {"name": "SMITH JOHN", "birth_date": "1980-01-01"}});
    let r = push(&s, tokens::GONGAN, "residence_permit", &[line]);
    assert_eq!((r.status, r.json["applied"].as_u64()), (200, Some(1)), "{}", r.text);

    // The key check explains the number as the document it names.
    let r = s.req("GET", &format!("/v1/keys/person/{pp}?id_type=passport")).token(tokens::COUNTER).get();
    assert_eq!((r.status, r.json["valid"].as_bool()), (200, Some(true)), "{}", r.text);
    assert_eq!((r.json["id_type"].as_str(), r.json["normalized"].as_str(), r.json["kind"].as_str()), (Some("passport"), Some(pp), Some("cn_ordinary")));
    let r = s.req("GET", "/v1/keys/person/E1234-678?id_type=passport").token(tokens::COUNTER).get();
    assert_eq!((r.json["valid"].as_bool(), r.json["reason"].as_str()), (Some(false), Some("format")), "{}", r.text);
    let r = s.req("GET", &format!("/v1/keys/person/{pp}?id_type=business_licence")).token(tokens::COUNTER).get();
    assert_eq!((r.status, r.code()), (400, "invalid_value"), "{}", r.text);
    // Without id_type the path is a citizen ID number, as always.
    let r = s.req("GET", &format!("/v1/keys/person/{pp}")).token(tokens::COUNTER).get();
    assert_eq!((r.json["valid"].as_bool(), r.json["reason"].as_str()), (Some(false), Some("length")));

    let r = s.req("GET", &format!("/v1/persons/{pp}?id_type=passport")).token(tokens::COUNTER).purpose("办事人身份核实").get();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["key"].as_str(), r.json["id_type"].as_str()), (Some(pp), Some("passport")));
    assert_eq!(name_of(&r, "residence_permit"), "SMITH JOHN");
    let r = s.req("GET", &format!("/v1/persons/{pp}")).token(tokens::COUNTER).purpose("办事人身份核实").get();
    assert_eq!((r.status, r.code(), r.json["error"]["details"]["reason"].as_str()), (400, "invalid_key", Some("length")));
    // The same characters as another document are another subject.
    let r = s.req("GET", &format!("/v1/persons/{pp}?id_type=hk_macao_taiwan_permit")).token(tokens::COUNTER).purpose("x").get();
    assert_eq!((r.status, r.code()), (400, "invalid_key"), "{}", r.text);

    let claim = json!({"dataset": "residence_permit", "fields": {"name": "SMITH JOHN", "birth_date": "1980-01-02"}});
    let r = s.req("POST", &format!("/v1/persons/{pp}/verify?id_type=passport")).token(tokens::COUNTER).purpose("办事人身份核实").json(&claim);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["result"].as_str(), r.json["fields"]["name"].as_str()), (Some("mismatch"), Some("match")));

    let lines = [
        json!({"ref": 1, "subject": "person", "id_type": "passport", "key": pp, "dataset": "residence_permit", "fields": {"name": "SMITH JOHN"}}),
        json!({"ref": 2, "subject": "person", "id_type": "passport", "key": "E12", "dataset": "residence_permit", "fields": {"name": "x"}}),
    ];
    let r = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose("办事人身份核实").ndjson(&lines);
    let out: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((out[0]["result"].as_str(), out[0]["id_type"].as_str()), (Some("match"), Some("passport")), "{}", r.text);
    assert_eq!(out[1]["error"]["details"]["reason"], "length", "{}", r.text);

    // The audit trail of the passport number, by id_type (an update is
    // audited per request, not per key).
    let r = s.req("GET", &format!("/v1/audit?key={pp}&id_type=passport")).token(tokens::AUDITOR).get();
    let entries = r.json["entries"].as_array().unwrap_or_else(|| panic!("{}", r.text));
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["lookup", "verify", "batch_verify"], "{}", r.text);
    assert!(entries.iter().all(|e| e["id_type"] == "passport" && e["key"] == pp));
}

#[test]
fn an_entity_known_by_its_licence_number_keeps_its_record_and_trail_when_given_a_credit_code() {
    let s = Server::start(&standard_config());
    let licence = doc_key(&GEN, DocType::BusinessLicence, 0);
    let lic = licence.as_str();
    let code = entity_key(&GEN, 0);
    let code = code.as_str();
    let r = push(&s, tokens::SHICHANG, "market_registration", &[
        json!({"key": lic, "id_type": "business_licence", "version": 1, "fields": {"name": "某某五金店", "status": "active"}}),
    ]);
    assert_eq!(r.json["applied"], 1, "{}", r.text);
    let purpose = "市场主体登记和监管";
    let lookup = |key: &str, id_type: Option<&str>| {
        let q = id_type.map(|t| format!("?id_type={t}")).unwrap_or_default();
        s.req("GET", &format!("/v1/entities/{key}{q}")).token(tokens::COUNTER).purpose(purpose).get()
    };
    let r = lookup(lic, Some("business_licence"));
    assert_eq!((r.status, name_of(&r, "market_registration")), (200, "某某五金店".into()), "{}", r.text);
    assert_eq!(lookup(code, None).status, 404);

    // The credit code is assigned: one update names both numbers.
    let r = push(&s, tokens::SHICHANG, "market_registration", &[
        json!({"key": code, "registration_number": lic, "version": 2, "fields": {"name": "某某五金有限公司", "status": "active"}}),
    ]);
    assert_eq!((r.json["applied"].as_u64(), r.json["rejected_total"].as_u64()), (Some(1), Some(0)), "{}", r.text);
    for (key, id_type) in [(code, None), (lic, Some("business_licence"))] {
        let r = lookup(key, id_type);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(name_of(&r, "market_registration"), "某某五金有限公司");
        assert_eq!(r.json["datasets"]["market_registration"]["version"], 2);
        assert_eq!(r.json["key"], key);
        // Answers about a credit code are as they always were.
        assert_eq!(r.json.get("id_type").and_then(Value::as_str), id_type, "{}", r.text);
        let q = id_type.map(|t| format!("?id_type={t}")).unwrap_or_default();
        let claim = json!({"fields": {"name": "某某五金有限公司"}});
        let v = s.req("POST", &format!("/v1/entities/{key}/verify{q}")).token(tokens::COUNTER).purpose(purpose).json(&claim);
        assert_eq!((v.status, v.json["result"].as_str()), (200, Some("match")), "{}", v.text);
        // In a batch too; its use is recorded under the key as given.
        let line = json!({"ref": 1, "subject": "entity", "key": key, "id_type": id_type, "fields": {"name": "某某五金有限公司"}});
        let b = s.req("POST", "/v1/verify/batch").token(tokens::COUNTER).purpose(purpose).ndjson(&[line]);
        let answer: Value = serde_json::from_str(b.text.trim()).unwrap_or_else(|_| panic!("{}", b.text));
        assert_eq!(answer["result"], "match", "{}", b.text);
    }

    // Another credit code for the same licence number is a conflict, and changes nothing.
    let other = entity_key(&GEN, 1);
    let r = push(&s, tokens::SHICHANG, "market_registration", &[
        json!({"key": other.as_str(), "registration_number": lic, "version": 3, "fields": {"name": "冒名", "status": "active"}}),
    ]);
    assert_eq!((r.json["applied"].as_u64(), r.json["rejected"][0]["code"].as_str()), (Some(0), Some("conflict")), "{}", r.text);
    assert_eq!(name_of(&lookup(code, None), "market_registration"), "某某五金有限公司");
    assert_eq!(lookup(other.as_str(), None).status, 404);

    // The trail is the same by either key, and names each use's own key.
    let trail = |q: &str| {
        let r = s.req("GET", &format!("/v1/audit?{q}")).token(tokens::AUDITOR).get();
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["entries"].as_array().unwrap().iter().map(|e| (e["seq"].as_u64().unwrap(), e["key"].as_str().unwrap().to_owned())).collect::<Vec<_>>()
    };
    let by_code = trail(&format!("key={code}"));
    assert_eq!(by_code, trail(&format!("key={lic}&id_type=business_licence")));
    let lookups_and_verifies = by_code.iter().filter(|(_, k)| k == code).count();
    assert!(lookups_and_verifies >= 3, "{by_code:?}");
    assert!(by_code.iter().any(|(_, k)| k == lic), "{by_code:?}");
    assert!(by_code.iter().all(|(_, k)| k == lic || k == code), "{by_code:?}");
    let r = s.req("GET", &format!("/v1/audit?key={code}")).token(tokens::AUDITOR).get();
    let entries = r.json["entries"].as_array().unwrap_or_else(|| panic!("{}", r.text));
    let mut expected = vec![code, lic];
    expected.sort();
    // Each number's point verification and batch line is listed under
    // the number as given.
    for action in ["verify", "batch_verify"] {
        let mut used: Vec<&str> = entries.iter().filter(|e| e["action"] == action).map(|e| e["key"].as_str().unwrap()).collect();
        used.sort();
        assert_eq!(used, expected, "{action}: {}", r.text);
    }
    assert!(s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get().json["ok"].as_bool().unwrap());
}
