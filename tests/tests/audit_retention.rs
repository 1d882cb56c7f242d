//! The audit retention period with the release binary: entries written
//! more than `audit_retention_days` ago (by a server whose clock was
//! shifted back) are removed at the next start, named on record first,
//! and the chain and its index check from where the removal stopped.

use basedata_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DAY: i64 = 86_400;

fn config(offset_days: i64, extra: &str) -> String {
    format!("clock_offset_seconds = {}\n{extra}\n{}", offset_days * DAY, standard_config())
}

use basedata_tests::audit_entries as audit;

#[test]
fn entries_past_the_retention_period_are_removed_and_the_removal_recorded() {
    let scratch = tempfile::tempdir().unwrap();
    let g = basedata_gen::GenConfig { persons: 4, entities: 0, seed: 11 };
    let keys: Vec<String> = (0..4).map(|i| basedata_gen::person_key(&g, i).as_str().to_owned()).collect();

    // Two hundred days ago: an update and two lookups.
    let mut s = Server::start_in(scratch.path(), &config(-200, ""), &[]);
    let lines: Vec<Value> =
        (0..4).map(|i| json!({"key": keys[i], "version": 1, "fields": basedata_gen::person_hukou(&g, i as u64)})).collect();
    let r = s.req("POST", "/v1/datasets/hukou/updates").token(tokens::GONGAN).ndjson(&lines);
    assert_eq!(r.json["applied"], 4, "{}", r.text);
    for k in &keys[..2] {
        assert_eq!(s.req("GET", &format!("/v1/persons/{k}")).token(tokens::COUNTER).purpose("核对").get().status, 200);
    }
    let old = audit(&s, "").len() as u64;
    assert_eq!(old, 3);
    assert!(s.terminate().success());

    // Today, with no retention set: everything stays.
    let mut s = Server::start_in(scratch.path(), &config(0, ""), &[]);
    assert_eq!(s.req("GET", &format!("/v1/persons/{}", keys[2])).token(tokens::COUNTER).purpose("核对").get().status, 200);
    assert_eq!(audit(&s, "").len(), 4);
    assert!(s.terminate().success());

    // Kept for 184 days: the three old entries go at start.
    let mut s = Server::start_in(scratch.path(), &config(0, "audit_retention_days = 184"), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The removal is named in the trail first, then made: wait for both.
    let entries = loop {
        let e = audit(&s, "");
        if e.iter().any(|e| e["action"] == "retention") && e.iter().all(|e| e["seq"].as_u64() > Some(3)) {
            break e;
        }
        assert!(Instant::now() < deadline, "no removal recorded: {e:?}\n{}", s.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![4, 5], "{entries:?}");
    assert_eq!(entries[0]["action"], "lookup");
    let removal = &entries[1];
    assert_eq!(removal["department"], "system");
    let outcome = removal["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("up to entry 3 of this node's chain; dated before "), "{outcome}");
    // "Who used this person's data" no longer reaches back past the period.
    assert!(audit(&s, &format!("&key={}", keys[0])).is_empty());
    assert_eq!(audit(&s, &format!("&key={}", keys[2])).len(), 1);

    let v = s.req("GET", "/v1/audit/verify").token(tokens::AUDITOR).get();
    assert_eq!(v.status, 200, "{}", v.text);
    assert_eq!((v.json["ok"].clone(), v.json["entries"].clone(), v.json["starts_after"].clone()), (json!(true), json!(2), json!(3)), "{}", v.text);
    assert!(s.terminate().success());

    // The offline check agrees, index included.
    let (status, out, err) = run_cli(&[
        "audit-verify",
        "--data",
        scratch.path().join("data").to_str().unwrap(),
        "--config",
        scratch.path().join("basedata.toml").to_str().unwrap(),
    ]);
    assert!(status.success(), "{out}\n{err}");
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((line["ok"].clone(), line["starts_after"].clone(), line["index"]["ok"].clone()), (json!(true), json!(3), json!(true)), "{out}");
}
