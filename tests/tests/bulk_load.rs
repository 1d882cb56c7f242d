//! End to end with the release binary: `basedata gen`, then `basedata load`
//! of hukou (with invalid lines, blank lines and duplicate keys added) and
//! of an entity dataset into a new data directory; the error report lists
//! every rejected line. A server started on the directory then serves the
//! loaded records as if they had been pushed through the updates endpoint:
//! lookups, verification, key-typed fields, stale detection of older and
//! equal versions, a newer version applying with the next sequence number,
//! the freshness counters. After it stops, the change log is dense. A
//! second load into a loaded dataset goes through the write path, line by
//! line against the stored versions; a load while the server runs and bad
//! arguments are refused with one line and a non-zero exit.

use basedata_store::clock::SystemClock;
use basedata_store::dir::{self as data_dir, KeySource, OpenOptions};
use basedata_store::Catalog;
use basedata_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn read_ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn load(data: &Path, dataset: &str, input: &Path, extra: &[&str]) -> (std::process::ExitStatus, String, String) {
    let mut args =
        vec!["load", "--data", data.to_str().unwrap(), "--dataset", dataset, "--input", input.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_cli(&args)
}

fn one_line_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line of reason: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

fn field<'a>(line: &'a Value, name: &str) -> &'a str {
    line["fields"][name].as_str().unwrap()
}

#[test]
fn a_bulk_load_serves_like_pushed_updates() {
    let dir = tempfile::tempdir().unwrap();
    let gen_dir = dir.path().join("gen");
    let (st, out, err) =
        run_cli(&["gen", "--persons", "3000", "--entities", "400", "--out", gen_dir.to_str().unwrap(), "--seed", "5"]);
    assert!(st.success(), "{out}{err}");
    let generated = read_ndjson(&gen_dir.join("hukou.ndjson"));
    let n = generated.len();
    assert_eq!(n, 3000);
    let key = |i: usize| generated[i]["key"].as_str().unwrap().to_owned();
    let version = |i: usize| generated[i]["version"].as_u64().unwrap();

    // The generated lines, then duplicates and invalid lines.
    let mut text: String = generated.iter().map(|l| format!("{l}\n")).collect();
    let mut newer0 = generated[0].clone();
    newer0["version"] = json!(version(0) + 1);
    newer0["fields"]["name"] = json!("新版本");
    let mut equal1 = generated[1].clone();
    equal1["fields"]["name"] = json!("同版本后到");
    let mut older3 = generated[3].clone();
    older3["version"] = json!(0);
    older3["fields"]["name"] = json!("旧版本");
    let mut bad_key = generated[5].clone();
    let k5 = key(5);
    let wrong_check = if k5.ends_with('0') { format!("{}1", &k5[..17]) } else { format!("{}0", &k5[..17]) };
    bad_key["key"] = json!(wrong_check);
    let mut unknown = generated[6].clone();
    unknown["fields"]["nickname"] = json!("x");
    let mut bad_code = generated[7].clone();
    bad_code["fields"]["gender"] = json!("9");
    let tail: Vec<(String, Option<(&str, Option<String>)>)> = vec![
        (newer0.to_string(), None),
        (equal1.to_string(), None),
        ("   ".into(), None), // blank: skipped, still numbered
        (older3.to_string(), None),
        (bad_key.to_string(), Some(("invalid_key", Some(wrong_check.clone())))),
        (unknown.to_string(), Some(("unknown_field", Some(key(6))))),
        ("{not json".into(), Some(("invalid_body", None))),
        (json!({"key": key(8), "op": "upsert", "fields": {}}).to_string(), Some(("invalid_body", Some(key(8))))),
        (bad_code.to_string(), Some(("invalid_value", Some(key(7))))),
    ];
    let mut expected_errors = Vec::new();
    for (i, (line, err)) in tail.iter().enumerate() {
        text.push_str(line);
        text.push('\n');
        if let Some((code, k)) = err {
            expected_errors.push(((n + i + 1) as u64, code.to_string(), k.clone()));
        }
    }
    let input = dir.path().join("hukou.ndjson");
    std::fs::write(&input, text).unwrap();

    let data = dir.path().join("data");
    let (st, out, err) = load(&data, "hukou", &input, &["--memory-mb", "16"]);
    assert!(st.success(), "{out}{err}");
    let lines = n + tail.len() - 1;
    assert!(out.starts_with(&format!("hukou: {lines} lines, {n} loaded, 5 rejected, 3 superseded,")), "summary: {out}");
    assert!(out.contains(&format!("sequence numbers 1..={n}")), "{out}");
    let report = read_ndjson(&dir.path().join("hukou.ndjson.errors.ndjson"));
    let got: Vec<(u64, String, Option<String>)> = report
        .iter()
        .map(|r| {
            (r["line"].as_u64().unwrap(), r["code"].as_str().unwrap().to_owned(), r["key"].as_str().map(str::to_owned))
        })
        .collect();
    assert_eq!(got, expected_errors);
    assert!(report.iter().all(|r| !r["message"].as_str().unwrap().is_empty()));

    // An entity dataset, with its key-typed legal representative.
    let mr_input = gen_dir.join("market_registration.ndjson");
    let mr = read_ndjson(&mr_input);
    let mr_errors = dir.path().join("mr-errors.ndjson");
    let (st, out, err) = load(&data, "market_registration", &mr_input, &["--errors", mr_errors.to_str().unwrap()]);
    assert!(st.success(), "{out}{err}");
    assert!(out.starts_with(&format!("market_registration: {0} lines, {0} loaded, 0 rejected", mr.len())), "{out}");
    assert_eq!(std::fs::read_to_string(&mr_errors).unwrap(), "");

    // A second load into the loaded dataset goes through the write path,
    // as pushes would: every valid line is stale now, the same lines are
    // rejected, and nothing changes.
    let (st, out, err) = load(&data, "hukou", &input, &[]);
    assert!(st.success(), "{out}{err}");
    assert!(out.starts_with(&format!("hukou: {lines} lines, 0 loaded, 5 rejected, {} stale,", lines - 5)), "summary: {out}");
    assert!(out.contains("through the write path"), "{out}");
    let again: Vec<(u64, String, Option<String>)> = read_ndjson(&dir.path().join("hukou.ndjson.errors.ndjson"))
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["code"].as_str().unwrap().to_owned(), r["key"].as_str().map(str::to_owned)))
        .collect();
    assert_eq!(again, expected_errors);

    // Refusals: bad arguments.
    let (st, _, err) = load(&data, "no_such_dataset", &input, &[]);
    assert!(!st.success() && one_line_error(&err).contains("unknown dataset no_such_dataset"), "{err}");
    let (st, _, err) = load(&data, "death", &dir.path().join("missing.ndjson"), &[]);
    assert!(!st.success() && one_line_error(&err).contains("cannot read"), "{err}");
    let (st, _, err) = load(&data, "death", &input, &["--memory-mb", "1"]);
    assert!(!st.success() && one_line_error(&err).contains("--memory-mb"), "{err}");

    let total = (n + mr.len()) as u64;
    let mut s = Server::start_in(dir.path(), &standard_config(), &[]);
    let (st, _, err) = load(&data, "death", &gen_dir.join("death.ndjson"), &[]);
    assert!(!st.success() && one_line_error(&err).contains("stop the server"), "{err}");

    let person = |k: &str| {
        let r = s.req("GET", &format!("/v1/persons/{k}?datasets=hukou")).token(tokens::COUNTER).purpose("核验").get();
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["datasets"]["hukou"].clone()
    };
    // The highest version wins; on equal versions the first line; lower ones lose.
    let p0 = person(&key(0));
    assert_eq!((p0["version"].as_u64(), p0["fields"]["name"].as_str()), (Some(version(0) + 1), Some("新版本")));
    assert_eq!(person(&key(1))["fields"]["name"], generated[1]["fields"]["name"]);
    assert_eq!(person(&key(3))["version"].as_u64(), Some(version(3)));
    let p9 = person(&key(9));
    assert_eq!(p9["fields"]["birth_date"], generated[9]["fields"]["birth_date"]);
    assert_eq!(p9["version"].as_u64(), Some(version(9)));

    let verify = |k: &str, name: &str| {
        let body =
            json!({"dataset": "hukou", "fields": {"name": name, "birth_date": field(&generated[2], "birth_date")}});
        s.req("POST", &format!("/v1/persons/{k}/verify")).token(tokens::COUNTER).purpose("核验").json(&body)
    };
    let r = verify(&key(2), field(&generated[2], "name"));
    assert_eq!((r.status, r.json["result"].as_str()), (200, Some("match")), "{}", r.text);
    assert_eq!(verify(&key(2), "不是这个名字").json["result"], "mismatch");

    let e0 = &mr[0];
    let r = s
        .req("GET", &format!("/v1/entities/{}?datasets=market_registration", e0["key"].as_str().unwrap()))
        .token(tokens::SHICHANG)
        .purpose("核验")
        .get();
    assert_eq!(r.status, 200, "{}", r.text);
    let got = &r.json["datasets"]["market_registration"]["fields"];
    assert_eq!(got["legal_representative_id"], e0["fields"]["legal_representative_id"]);
    assert_eq!(got["name"], e0["fields"]["name"]);

    // Versions are respected from the first online update on.
    let mut newer2 = generated[2].clone();
    newer2["version"] = json!(version(2) + 1);
    newer2["fields"]["name"] = json!("在线更新");
    let mut older4 = generated[4].clone();
    older4["version"] = json!(0);
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&[
        generated[2].clone(),
        older4,
        newer2,
    ]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["applied"].as_u64(), r.json["stale"].as_u64()), (Some(1), Some(2)), "{}", r.text);
    assert_eq!(r.json["last_seq"].as_u64(), Some(total + 1));
    assert_eq!(person(&key(2))["fields"]["name"], "在线更新");

    let r = s.req("GET", "/v1/reports/freshness").token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    let rows: BTreeMap<String, Value> = r.json["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["dataset"].as_str().unwrap().to_owned(), d.clone()))
        .collect();
    assert_eq!(
        (rows["hukou"]["records"].as_u64(), rows["hukou"]["updates"].as_u64()),
        (Some(n as u64), Some(n as u64 + 1))
    );
    assert!(rows["hukou"]["last_update"].is_string());
    assert_eq!(rows["market_registration"]["records"].as_u64(), Some(mr.len() as u64));
    let r = s.req("GET", "/v1/audit?department=gongan").token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    let entries = r.json["entries"].as_array().expect("audit entries").clone();
    let loads: Vec<&Value> = entries
        .iter()
        .filter(|e| e["outcome"].as_str().is_some_and(|o| o.starts_with("bulk load of hukou.ndjson")))
        .collect();
    assert_eq!(loads.len(), 1, "{}", r.text);
    assert_eq!(loads[0]["action"], "update");
    assert!(loads[0]["outcome"].as_str().unwrap().contains(&format!("loaded={n} rejected=5")), "{}", loads[0]);
    assert!(s.terminate().success());

    // The change log: dense, every loaded record once, then the online one.
    let opened =
        data_dir::open(&data, &KeySource::default(), Arc::new(Catalog::builtin()), Arc::new(SystemClock), &OpenOptions::default());
    let store = opened.unwrap().store;
    let changes = store.changes(0, usize::MAX).unwrap();
    assert_eq!(changes.iter().map(|c| c.seq).collect::<Vec<_>>(), (1..=total + 1).collect::<Vec<_>>());
    let mut per_dataset: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &changes {
        *per_dataset.entry(c.dataset.as_str()).or_default() += 1;
    }
    assert_eq!(per_dataset, BTreeMap::from([("hukou", n + 1), ("market_registration", mr.len())]));
    let first = changes.iter().find(|c| c.key.as_str() == key(0)).unwrap();
    assert_eq!(first.version, version(0) + 1);
    assert_eq!(changes.last().unwrap().key.as_str(), key(2));
}

/// A file loaded into a dataset that already holds data is applied as the
/// updates endpoint would apply it: newer versions and new keys applied
/// with the next sequence numbers, others stale, every line audited as the
/// provider's update.
#[test]
fn a_load_into_a_dataset_with_data_goes_through_the_write_path() {
    let dir = tempfile::tempdir().unwrap();
    let gen_dir = dir.path().join("gen");
    let (st, out, err) = run_cli(&["gen", "--persons", "2501", "--entities", "0", "--out", gen_dir.to_str().unwrap(), "--seed", "7"]);
    assert!(st.success(), "{out}{err}");
    let generated = read_ndjson(&gen_dir.join("hukou.ndjson"));
    let first: String = generated[..2500].iter().map(|l| format!("{l}\n")).collect();
    let first_file = dir.path().join("first.ndjson");
    std::fs::write(&first_file, first).unwrap();
    let data = dir.path().join("data");
    let (st, out, err) = load(&data, "hukou", &first_file, &[]);
    assert!(st.success() && out.contains("2500 loaded"), "{out}{err}");

    // More lines than one request of the write path takes: a new key, a
    // newer version, the stored versions again, and a bad line at the end.
    let mut newer = generated[0].clone();
    newer["version"] = json!(newer["version"].as_u64().unwrap() + 1);
    newer["fields"]["name"] = json!("离线补录");
    let mut text: String = generated[..2500].iter().map(|l| format!("{l}\n")).collect();
    text.push_str(&format!("{}\n{newer}\n{{bad\n", generated[2500]));
    let second = dir.path().join("second.ndjson");
    std::fs::write(&second, text).unwrap();
    let (st, out, err) = load(&data, "hukou", &second, &[]);
    assert!(st.success(), "{out}{err}");
    assert!(out.starts_with("hukou: 2503 lines, 2 loaded, 1 rejected, 2500 stale,"), "{out}");
    assert!(out.contains("sequence numbers 2501..=2502"), "{out}");
    let report = read_ndjson(&dir.path().join("second.ndjson.errors.ndjson"));
    assert_eq!(report.len(), 1);
    assert_eq!((report[0]["line"].as_u64(), report[0]["code"].as_str()), (Some(2503), Some("invalid_body")));

    let s = Server::start_in(dir.path(), &standard_config(), &[]);
    let person = |k: &Value| {
        let r = s.req("GET", &format!("/v1/persons/{}?datasets=hukou", k.as_str().unwrap())).token(tokens::COUNTER).purpose("核验").get();
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["datasets"]["hukou"]["fields"]["name"].clone()
    };
    assert_eq!(person(&generated[0]["key"]), "离线补录");
    assert_eq!(person(&generated[2500]["key"]), generated[2500]["fields"]["name"]);
    let r = s.req("GET", "/v1/audit?department=gongan").token(tokens::AUDITOR).get();
    assert_eq!(r.status, 200, "{}", r.text);
    let pushes = r.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "update" && e["outcome"].as_str().is_some_and(|o| o.starts_with("submitted=")))
        .count();
    assert_eq!(pushes, 3, "one entry a thousand lines: {}", r.text);
}
