//! End to end over HTTP with the release binary: datasets of several
//! providers (the example catalog `store/catalog/several-providers.toml`).
//! Two district offices each update residence permits of their own area
//! and are refused, line by line, in the other's; a record moves from one
//! area to the other; the police, providing a part of the death records'
//! fields, are refused outside them; the catalog, the audit trail, the
//! freshness report and grants follow the division; a bulk load is one
//! provider's and keeps to its area.

use basedata_gen::{person_key, GenConfig};
use basedata_tests::*;
use serde_json::{json, Value};

const YUEXIU: &str = "t-yuexiu-000000000000";
const TIANHE: &str = "t-tianhe-000000000000";
const LAISUI: &str = "t-laisui-000000000000";

fn config(dir: &std::path::Path) -> String {
    let catalog = package_dir().join("../store/catalog/several-providers.toml");
    std::fs::copy(&catalog, dir.join("catalog.toml")).unwrap();
    let mut c = format!("catalog = \"catalog.toml\"\n\n{}", standard_config());
    for (id, token) in [("yuexiu", YUEXIU), ("tianhe", TIANHE), ("laisui", LAISUI)] {
        c.push_str(&format!("[[departments]]\nid = \"{id}\"\nroles = [\"provider\"]\ntoken = \"{token}\"\n\n"));
    }
    c
}

fn key(i: u64) -> String {
    person_key(&GenConfig { persons: 10, entities: 0, seed: 7 }, i).as_str().to_owned()
}

fn permit(key: &str, version: u64, area: &str) -> Value {
    json!({"key": key, "version": version, "fields": {"name": "测试", "area_code": area, "permit_no": format!("P{version}")}})
}

fn push(s: &Server, token: &str, ds: &str, lines: &[Value]) -> Resp {
    let r = s.req("POST", &format!("/v1/datasets/{ds}/updates")).token(token).ndjson(lines);
    assert_eq!(r.status, 200, "{}", r.text);
    r
}

/// `(line, code)` of each rejected line.
fn rejected(r: &Resp) -> Vec<(u64, String)> {
    r.json["rejected"].as_array().unwrap().iter().map(|x| (x["line"].as_u64().unwrap(), x["code"].as_str().unwrap().to_owned())).collect()
}

fn permit_area(s: &Server, key: &str) -> Option<String> {
    let r = s.req("GET", &format!("/v1/persons/{key}?datasets=residence_permit")).token(tokens::COUNTER).purpose("居住证核验").get();
    (r.status == 200).then(|| r.json["datasets"]["residence_permit"]["fields"]["area_code"].as_str().unwrap().to_owned())
}

#[test]
fn area_and_field_providers_each_write_only_their_part() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &config(dir.path()), &[]);
    let (a, b, c) = (key(0), key(1), key(2));

    // The catalog shows every provider with its part; `provider` is the steward.
    let cat = s.req("GET", "/v1/catalog").token(tokens::COUNTER).get();
    let permits = cat.json["datasets"].as_array().unwrap().iter().find(|d| d["id"] == "residence_permit").unwrap().clone();
    assert_eq!(permits["provider"], "laisui");
    assert_eq!(permits["division"], json!({"by": "area", "area_field": "area_code"}));
    assert_eq!(permits["providers"][1], json!({"id": "tianhe", "name": "天河区来穗人员服务管理中心", "areas": ["440106"]}));

    // Each office writes its own area's records; the other's lines are refused.
    let r = push(&s, YUEXIU, "residence_permit", &[permit(&a, 1, "440104"), permit(&b, 1, "440106")]);
    assert_eq!((r.json["applied"].as_u64(), rejected(&r)), (Some(1), vec![(2, "forbidden".to_owned())]), "{}", r.text);
    assert!(r.json["rejected"][0]["message"].as_str().unwrap().contains("only tianhe may"), "{}", r.text);
    let r = push(&s, TIANHE, "residence_permit", &[permit(&b, 1, "440106"), permit(&a, 2, "440106"), json!({"key": a, "version": 3, "op": "delete"})]);
    assert_eq!((r.json["applied"].as_u64(), rejected(&r)), (Some(1), vec![(2, "forbidden".to_owned()), (3, "forbidden".to_owned())]));
    assert_eq!(r.json["rejected_by_code"], json!({"forbidden": 2}));
    assert_eq!(permit_area(&s, &a).as_deref(), Some("440104"), "Tianhe changed nothing of Yuexiu's record");

    // Yuexiu moves its record to Tianhe, which then owns it.
    assert_eq!(push(&s, YUEXIU, "residence_permit", &[permit(&a, 4, "440106")]).json["applied"], 1);
    assert_eq!(rejected(&push(&s, YUEXIU, "residence_permit", &[permit(&a, 5, "440104")])).len(), 1);
    assert_eq!(push(&s, TIANHE, "residence_permit", &[permit(&a, 6, "440106001")]).json["applied"], 1);
    assert_eq!(permit_area(&s, &a).as_deref(), Some("440106001"));

    // A department that provides none of it is refused whole (403).
    let r = s.req("POST", "/v1/datasets/residence_permit/updates").token(tokens::GONGAN).ndjson(&[permit(&c, 1, "440104")]);
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // Deaths: the police provide the station and officer, health the rest.
    let r = push(&s, tokens::GONGAN, "death", &[
        json!({"key": c, "version": 1, "fields": {"police_station": "某派出所"}}),
        json!({"key": c, "version": 2, "fields": {"police_station": "某派出所", "death_date": "2020-02-02"}}),
    ]);
    assert_eq!((r.json["applied"].as_u64(), rejected(&r)), (Some(1), vec![(2, "forbidden".to_owned())]), "{}", r.text);
    assert_eq!(r.json["rejected"][0]["message"], "field death_date is provided by weijian, not gongan");
    assert_eq!(push(&s, tokens::WEIJIAN, "death", &[json!({"key": c, "version": 3, "fields": {"name": "测试", "death_date": "2020-02-02"}})]).json["applied"], 1);
    let r = s.req("GET", &format!("/v1/persons/{c}?datasets=death")).token(tokens::COUNTER).purpose("死亡核验").get();
    let fields = &r.json["datasets"]["death"]["fields"];
    assert_eq!((fields["police_station"].as_str(), fields["death_date"].as_str()), (Some("某派出所"), Some("2020-02-02")), "{}", r.text);

    // The police's delete takes their fields only; the change feed shows
    // the record as it results, to every provider of the dataset.
    assert_eq!(push(&s, tokens::GONGAN, "death", &[json!({"key": c, "version": 4, "op": "delete"})]).json["applied"], 1);
    let feed = s.req("GET", "/v1/changes?after=0&limit=100").token(tokens::WEIJIAN).purpose("数据同步").get();
    let deaths: Vec<&Value> = feed.json["changes"].as_array().unwrap().iter().filter(|c| c["dataset"] == "death").collect();
    let last = deaths.last().unwrap();
    assert_eq!((last["op"].as_str(), last["version"].as_u64()), (Some("upsert"), Some(4)), "{}", feed.text);
    assert_eq!(last["fields"], json!({"name": "测试", "death_date": "2020-02-02"}));

    // Refused lines are on record as denied entries of their senders.
    let audit = s.req("GET", "/v1/audit?department=tianhe&limit=100").token(tokens::AUDITOR).get();
    let denied: Vec<&str> = audit.json["entries"].as_array().unwrap().iter()
        .filter(|e| e["action"] == "denied").map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(denied, ["forbidden lines=2: outside the provider's area or fields"], "{}", audit.text);

    // Timeliness per provider.
    let f = s.req("GET", "/v1/reports/freshness").token(tokens::AUDITOR).get();
    let row = f.json["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == "residence_permit").unwrap().clone();
    let updates: Vec<(String, u64)> = row["providers"].as_array().unwrap().iter()
        .map(|p| (p["provider"].as_str().unwrap().to_owned(), p["updates"].as_u64().unwrap())).collect();
    assert_eq!(updates, [("yuexiu".to_owned(), 2), ("tianhe".to_owned(), 2), ("laisui".to_owned(), 0)], "{row}");
    assert_eq!(row["updates"], 4);

    // Every provider of the dataset reads its conditional fields, as an
    // only provider does; a consumer needs a grant.
    let d = key(5);
    let line = json!({"key": d, "version": 1, "fields": {"name": "测试", "area_code": "440104", "residence_address": "某街1号"}});
    assert_eq!(push(&s, YUEXIU, "residence_permit", &[line]).json["applied"], 1);
    let read = |token: &str| {
        let r = s.req("GET", &format!("/v1/persons/{d}?datasets=residence_permit")).token(token).purpose("上门服务").get();
        r.json["datasets"]["residence_permit"]["fields"]["residence_address"].as_str().map(str::to_owned)
    };
    assert_eq!((read(TIANHE).as_deref(), read(tokens::COUNTER)), (Some("某街1号"), None));

    // The steward decides grants; another provider of the dataset may not,
    // and needs none to read it.
    let apply = json!({"dataset": "residence_permit", "fields": ["residence_address"], "purpose": "上门服务", "legal_basis": "测试依据"});
    let g = s.req("POST", "/v1/grants").token(tokens::COUNTER).json(&apply);
    assert_eq!(g.status, 201, "{}", g.text);
    let id = g.json["id"].as_str().unwrap();
    let d = s.req("POST", &format!("/v1/grants/{id}/decision")).token(YUEXIU).json(&json!({"approve": true}));
    assert_eq!((d.status, d.code()), (403, "forbidden"), "{}", d.text);
    let d = s.req("POST", &format!("/v1/grants/{id}/decision")).token(LAISUI).json(&json!({"approve": true}));
    assert_eq!(d.status, 200, "{}", d.text);

    // A dispute goes to the provider of the disputed value: the office of
    // the record's area, or the provider of the field; the steward may too.
    let dispute = |key: &str, ds: &str, field: &str| {
        let body = json!({"subject": "person", "key": key, "dataset": ds, "field": field, "claimed": "某某", "note": "窗口核对不一致"});
        let r = s.req("POST", "/v1/disputes").token(tokens::COUNTER).purpose("异议核查").json(&body);
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["id"].as_str().unwrap().to_owned()
    };
    let resolve = |token: &str, id: &str| {
        s.req("POST", &format!("/v1/disputes/{id}/resolution")).token(token).json(&json!({"outcome": "confirmed", "note": "核实无误"}))
    };
    let id = dispute(&key(5), "residence_permit", "name");
    let r = resolve(TIANHE, &id);
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    assert!(r.text.contains("yuexiu"), "the refusal names who answers for it: {}", r.text);
    assert_eq!(resolve(YUEXIU, &id).status, 200);
    let id = dispute(&c, "death", "police_station");
    assert_eq!(resolve(tokens::WEIJIAN, &id).status, 200, "the steward of deaths may resolve");
    let id = dispute(&c, "death", "police_station");
    assert_eq!(resolve(tokens::GONGAN, &id).status, 200, "the police answer for their field");

    // The yearly report counts each office's own updates and refused
    // lines, each line once, and the steward's grant.
    let r = s.req("GET", "/v1/reports/annual").token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    let ds = |id: &str| r.json["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == id).unwrap().clone();
    let dep = |id: &str| r.json["departments"].as_array().unwrap().iter().find(|d| d["department"] == id).unwrap().clone();
    let permits = ds("residence_permit");
    let parts: Vec<(String, u64)> = permits["providers"].as_array().unwrap().iter()
        .map(|p| (p["provider"].as_str().unwrap().to_owned(), p["updates_applied"].as_u64().unwrap())).collect();
    assert_eq!(parts, [("yuexiu".to_owned(), 3), ("tianhe".to_owned(), 2), ("laisui".to_owned(), 0)], "{permits}");
    assert_eq!((permits["updates_applied"].as_u64(), permits["rejected_lines"].as_u64()), (Some(5), Some(4)), "{permits}");
    assert_eq!(ds("death")["rejected_lines"].as_u64(), Some(1));
    for (who, applied, rejected) in [("yuexiu", 3, 2), ("tianhe", 2, 2)] {
        let d = dep(who);
        assert_eq!((d["updates_applied"].as_u64(), d["rejected_lines"].as_u64()), (Some(applied), Some(rejected)), "{who}: {d}");
        assert_eq!(d["grants"]["received"].as_u64(), Some(0), "grants are the steward's");
    }
    assert_eq!(dep("laisui")["grants"]["answered"].as_u64(), Some(1));
}

#[test]
fn a_bulk_load_is_one_providers_and_keeps_to_its_area() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_text = config(dir.path());
    let cfg = dir.path().join("basedata.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let (a, b) = (key(3), key(4));
    let input = dir.path().join("permits.ndjson");
    let lines = [permit(&a, 1, "440104"), permit(&b, 1, "440106")];
    std::fs::write(&input, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let data = dir.path().join("data");
    let load = |extra: &[&str]| {
        let mut args = vec!["load", "--data", data.to_str().unwrap(), "--dataset", "residence_permit"];
        args.extend_from_slice(&["--input", input.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
        args.extend_from_slice(extra);
        run_cli(&args)
    };
    let (st, _, err) = load(&[]);
    assert!(!st.success() && err.contains("name the one whose part this load is with --provider"), "{err}");
    let (st, _, err) = load(&["--provider", "gongan"]);
    assert!(!st.success() && err.contains("gongan is not a provider of dataset residence_permit"), "{err}");
    let (st, out, err) = load(&["--provider", "yuexiu"]);
    assert!(st.success(), "{out}{err}");
    let errors = std::fs::read_to_string(dir.path().join("permits.ndjson.errors.ndjson")).unwrap();
    let errors: Vec<Value> = errors.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0]["line"].as_u64(), errors[0]["code"].as_str()), (Some(2), Some("forbidden")));

    // Served: Yuexiu's record is there, Tianhe's area still Tianhe's to fill.
    let s = Server::start_in(dir.path(), &cfg_text, &[]);
    assert_eq!(permit_area(&s, &a).as_deref(), Some("440104"));
    assert_eq!(permit_area(&s, &b), None);
    assert_eq!(push(&s, TIANHE, "residence_permit", &[permit(&b, 1, "440106")]).json["applied"], 1);
    assert_eq!(rejected(&push(&s, TIANHE, "residence_permit", &[permit(&a, 2, "440106")])).len(), 1);
    let audit = s.req("GET", "/v1/audit?department=yuexiu&limit=10").token(tokens::AUDITOR).get();
    assert!(audit.json["entries"][0]["outcome"].as_str().unwrap().contains("loaded=1 rejected=1"), "{}", audit.text);
}
