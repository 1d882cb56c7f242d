//! Fuzzes batch comparison lines: any bytes, cut into chunks as a request
//! body is and verified against a store holding one person, are answered
//! without a panic, one answer and one audited use per line, each answer a
//! JSON object with a `ref` and either a `result` or an `error`; and a
//! line's claims, where its `fields` parse as a JSON object, are answered
//! as that object's claims are.
#![no_main]

use basedata_query::batch::{process, Cutter, Unrestricted};
use basedata_query::verify::Claims;
use basedata_store::clock::ManualClock;
use basedata_store::engine::mem::MemEngine;
use basedata_store::{Catalog, Durability, Secret, Store, Subject, SubjectKey, Update, UpdateOp, Value};
use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;
use std::sync::{Arc, OnceLock};

const PERSON: &str = "11010519491231002X";

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let s = Store::open(
            Arc::new(MemEngine::new()),
            &Secret::from_bytes([5; 32]),
            Arc::new(Catalog::builtin()),
            Arc::new(ManualClock::new(1_000_000)),
        )
        .expect("store opens");
        let birth = time::Date::from_calendar_date(1949, time::Month::December, 31).expect("a date");
        let fields = vec![("name".to_string(), Value::Str("张三".into())), ("birth_date".to_string(), Value::Date(birth))];
        let key = SubjectKey::parse(Subject::Person, PERSON).expect("a valid key");
        let u = Update { link: None, dataset: "hukou".into(), key, version: 1, op: UpdateOp::Upsert(fields), provider: None };
        s.apply(&[u], Durability::Sync).expect("the person is stored");
        s.keep_prints().expect("fingerprints");
        s
    })
}

fuzz_target!(|data: &[u8]| {
    let s = store();
    let mut cutter = Cutter::with_chunk_lines(16);
    let mut chunks = Vec::new();
    cutter.push(data, &mut chunks);
    chunks.extend(cutter.finish());
    for chunk in &chunks {
        let res = process(s, &Unrestricted, chunk).expect("a chunk is answered");
        let answers: Vec<Json> = res
            .out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("an answer is JSON"))
            .collect();
        assert_eq!(answers.len(), chunk.lines as usize);
        assert_eq!(res.uses.len(), chunk.lines as usize);
        for (line, answer) in chunk.lines().zip(&answers) {
            assert!(answer.get("ref").is_some(), "{answer}");
            assert!(answer.get("result").is_some() != answer.get("error").is_some(), "{answer}");
            same_as_an_object(s, line, answer);
        }
    }
});

/// Where the line is a JSON object claiming `fields` of the stored person
/// in the primary dataset, its answer is the object's claims' answer.
fn same_as_an_object(s: &Store, line: &[u8], answer: &Json) {
    let Ok(Json::Object(l)) = serde_json::from_slice::<Json>(line) else { return };
    let plain = l.keys().all(|k| matches!(k.as_str(), "ref" | "subject" | "key" | "fields"));
    if !plain || l.get("subject") != Some(&Json::from("person")) || l.get("key") != Some(&Json::from(PERSON)) {
        return;
    }
    // A repeated member of the line itself is refused; a JSON value keeps the last.
    if answer["error"]["message"].as_str().is_some_and(|m| m.starts_with("duplicate field")) {
        return;
    }
    let Some(Json::Object(fields)) = l.get("fields") else { return };
    let ds = s.catalog().dataset("hukou").expect("hukou");
    match Claims::parse(ds, fields) {
        Ok(claims) => {
            let rec = s.get(&SubjectKey::parse(Subject::Person, PERSON).expect("key"), "hukou", None).expect("read");
            let (outcome, verdicts) = claims.verify(rec.as_ref());
            assert_eq!(answer["result"], outcome.as_str(), "{answer}");
            let got: Vec<(&String, &Json)> = answer["fields"].as_object().expect("verdicts").iter().collect();
            let want: Vec<(String, Json)> = verdicts.iter().map(|(n, v)| (n.to_string(), Json::from(v.as_str()))).collect();
            assert_eq!(got.len(), want.len(), "{answer}");
            for ((gn, gv), (wn, wv)) in got.iter().zip(&want) {
                assert_eq!((*gn, *gv), (wn, wv), "{answer}");
            }
            // A line without a `ref` is answered with a null one.
            assert_eq!(answer["ref"], l.get("ref").cloned().unwrap_or(Json::Null), "{answer}");
        }
        Err(e) => assert_eq!(answer["error"]["code"], e.code(), "{answer}"),
    }
}
